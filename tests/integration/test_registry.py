"""The champion/challenger gate against a real MLflow store and a real Postgres."""

from __future__ import annotations

import json
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from loopline import db, registry
from loopline.config import load_config
from loopline.schemas import CATEGORICAL_FEATURES, FEATURE_COLUMNS, ID_COLUMNS

pytestmark = pytest.mark.integration
NAME = "loopline-test-model"


class ScoreModel(mlflow.pyfunc.PythonModel):
    """A stand-in model: fraud probability from one feature, with a knob for how good it is."""

    def __init__(self, noise: float, constant: bool = False, seed: int = 0):
        self.noise, self.constant, self.seed = noise, constant, seed

    def predict(self, context, model_input, params=None):
        if self.constant:
            return np.full(len(model_input), 0.5)
        rng = np.random.default_rng(self.seed)
        signal = model_input["amount_eur"].to_numpy(dtype=float) / 100.0
        return 1 / (1 + np.exp(-(signal + rng.normal(0, self.noise, len(model_input)) - 3)))


class BrokenModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("corrupt artifact")

    def predict(self, context, model_input, params=None):  # pragma: no cover - never loaded
        return np.zeros(len(model_input))


def holdout(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    frame = pd.DataFrame({c: rng.random(n) for c in FEATURE_COLUMNS})
    for column in (*ID_COLUMNS, *CATEGORICAL_FEATURES):
        frame[column] = "x"
    frame["amount_eur"] = rng.exponential(150, n)
    frame["is_fraud"] = (rng.random(n) < 1 / (1 + np.exp(-(frame["amount_eur"] / 100 - 3)))).astype(int)
    return frame


@pytest.fixture
def client(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    # artifacts in tmp too: the default artifact root is ./mlruns in the working directory
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("gate-test", artifact_location=str(tmp_path / "art")))
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def log_run(model: mlflow.pyfunc.PythonModel, frame: pd.DataFrame, tmp_path) -> str:
    """A training run as the trainer leaves it: a pyfunc model and its holdout.parquet."""
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=model, input_example=frame[list(FEATURE_COLUMNS)].head(3))
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        frame.to_parquet(folder / "holdout.parquet")
        mlflow.log_artifact(str(folder / "holdout.parquet"))
    return run.info.run_id


def gate(client, run_id, cfg):
    # The stand-in models are cloudpickled pyfuncs (a quality knob the rules need): these tests opt in to
    # loading them; real models are logged as code + native weights (tests/integration/test_model_artifacts.py).
    return registry.register_and_gate(
        client,
        run_id=run_id,
        model_name=NAME,
        gate=cfg.gate,
        threshold=0.5,
        triggered_by="test",
        reason="unit",
        allow_pickled=True,
    )


@pytest.fixture
def cfg():
    return load_config(environ={"LOOPLINE__GATE__ABSOLUTE_FLOOR": "0.6", "LOOPLINE__GATE__MIN_IMPROVEMENT": "0.01"})


def test_decide_rules():
    rules = {
        "primary_metric": "roc_auc",
        "min_improvement": 0.01,
        "absolute_floor": 0.7,
        "guardrails": {"pr_auc": 0.02},
    }
    assert registry.decide({"roc_auc": 0.8, "pr_auc": 0.3}, None, **rules).promote
    assert not registry.decide({"roc_auc": 0.6, "pr_auc": 0.3}, None, **rules).promote
    champion = {"roc_auc": 0.80, "pr_auc": 0.30}
    assert registry.decide({"roc_auc": 0.82, "pr_auc": 0.30}, champion, **rules).promote
    small = registry.decide({"roc_auc": 0.805, "pr_auc": 0.30}, champion, **rules)
    assert not small.promote
    assert "below the required" in small.reason
    guard = registry.decide({"roc_auc": 0.85, "pr_auc": 0.25}, champion, **rules)
    assert not guard.promote
    assert "guard-rail pr_auc" in guard.reason
    # Beating a champion that also scores below the floor (labels gone bad) promotes nothing.
    noise = registry.decide({"roc_auc": 0.56, "pr_auc": 0.3}, {"roc_auc": 0.50, "pr_auc": 0.3}, **rules)
    assert not noise.promote
    assert "candidate below floor" in noise.reason


def test_first_better_worse_rerun_and_rollback(client, cfg, tmp_path, postgres):
    frame = holdout()
    first = log_run(ScoreModel(noise=1.5), frame, tmp_path)
    decision, move = gate(client, first, cfg)
    assert (decision.promote, move.alias, move.version) == (True, "champion", 1)

    worse = log_run(ScoreModel(noise=4.0, seed=1), frame, tmp_path)
    decision, move = gate(client, worse, cfg)
    assert (decision.promote, move.alias) == (False, "challenger")
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    assert move.metrics["candidate"]["roc_auc"] < move.metrics["champion"]["roc_auc"]

    better = log_run(ScoreModel(noise=0.1, seed=2), frame, tmp_path)
    decision, move = gate(client, better, cfg)
    assert (decision.promote, move.alias, move.previous_version) == (True, "champion", 1)
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert int(champion.version) == 3
    assert champion.tags["loopline.previous_champion"] == "1"

    # Re-gating the same run (a task retry) registers nothing new.
    gate(client, better, cfg)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 3

    rolled = registry.rollback(client, NAME, triggered_by="test", reason="bad night")
    assert (rolled.version, rolled.previous_version) == (1, 3)
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1

    schema = f"gate_{uuid.uuid4().hex[:8]}"  # its own schema: other tests migrate `loopline` in this database
    assert postgres.migrate(schema) == [path.name.split("__")[0] for path in db.migration_files()]
    assert postgres.migrate(schema) == []  # idempotent
    with postgres.connect_loader() as conn:  # the role the gate task logs in as
        registry.record_move(conn, schema, move)
        registry.record_move(conn, schema, rolled)
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT alias, version, previous_version, metrics FROM {schema}.model_alias_history ORDER BY id"
            )
            rows = cur.fetchall()
            cur.execute(f"SELECT version FROM {schema}.champion_by_day ORDER BY day DESC LIMIT 1")
            today = cur.fetchone()[0]
    assert [(r[0], r[1], r[2]) for r in rows] == [("champion", 3, 1), ("champion", 1, 3)]
    assert json.loads(json.dumps(rows[0][3]))["champion_version"] == 1
    assert today == 1


def test_a_candidate_judged_on_poisoned_labels_never_becomes_champion(client, cfg, tmp_path):
    """A label feed gone bad (verdicts shuffled) reaches the holdout too: there every model is near chance,
    and some beat the champion by luck. The floor still keeps them from serving."""
    poisoned = holdout()
    poisoned["is_fraud"] = np.random.default_rng(7).permutation(poisoned["is_fraud"].to_numpy())

    def auc(seed: int) -> float:
        model = ScoreModel(noise=1.5, seed=seed)
        loaded = type("Loaded", (), {"predict": lambda _self, frame: model.predict(None, frame)})()
        return registry.holdout_metrics(loaded, poisoned, 0.5)["roc_auc"]

    by_auc = sorted(range(30), key=auc)
    champion_seed, lucky_seed = by_auc[0], by_auc[-1]
    # Without the floor for every promotion, the lucky candidate would be promoted.
    assert auc(lucky_seed) >= auc(champion_seed) + cfg.gate.min_improvement
    gate(client, log_run(ScoreModel(noise=1.5, seed=champion_seed), holdout(), tmp_path), cfg)  # clean labels
    decision, move = gate(client, log_run(ScoreModel(noise=1.5, seed=lucky_seed), poisoned, tmp_path), cfg)
    assert (decision.promote, move.alias) == (False, "challenger")
    assert "candidate below floor" in decision.reason
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1


def test_constant_or_broken_model_never_becomes_champion(client, cfg, tmp_path):
    frame = holdout()
    gate(client, log_run(ScoreModel(noise=1.5), frame, tmp_path), cfg)
    for model in (ScoreModel(noise=0, constant=True), BrokenModel()):
        run_id = log_run(model, frame, tmp_path)
        with pytest.raises(registry.GateError):
            gate(client, run_id, cfg)
        assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1


def test_shadow_first_deploys_the_gates_winner_as_shadow(client, cfg, tmp_path, postgres):
    """promotion.policy shadow_first: the first model still becomes champion (nothing to compare it with); a
    later winner gets alias `shadow` and the champion keeps serving; a loser stays challenger; the history row
    records the shadow move."""
    schema = f"shadow_{uuid.uuid4().hex[:8]}"
    postgres.migrate(schema)
    frame = holdout()

    def gate_shadow_first(run_id):
        with postgres.connect_loader() as conn:
            return registry.register_and_gate(
                client, run_id=run_id, model_name=NAME, gate=cfg.gate, threshold=0.5, triggered_by="test",
                reason="unit", allow_pickled=True, policy="shadow_first", conn=conn, schema=schema,
            )  # fmt: skip

    decision, move = gate_shadow_first(log_run(ScoreModel(noise=1.5), frame, tmp_path))
    assert (decision.promote, move.alias) == (True, "champion")
    decision, move = gate_shadow_first(log_run(ScoreModel(noise=0.1, seed=2), frame, tmp_path))
    assert (decision.promote, move.alias, move.version) == (False, "shadow", 2)
    assert "deployed as shadow" in decision.reason
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    assert int(client.get_model_version_by_alias(NAME, "shadow").version) == 2
    decision, move = gate_shadow_first(log_run(ScoreModel(noise=4.0, seed=1), frame, tmp_path))
    assert move.alias == "challenger"
    rows = postgres.query(f"SELECT alias, version, action, state FROM {schema}.model_alias_history ORDER BY id")
    assert rows == [
        ("champion", 1, "move", "applied"),
        ("shadow", 2, "move", "applied"),
        ("challenger", 3, "move", "applied"),
    ]
