"""Slices in the gate, against a real MLflow store and a real Postgres: a challenger that wins globally but
loses one slice stays challenger, and the gate names the slice."""

from __future__ import annotations

import json
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from loopline import registry
from loopline.config import load_config
from loopline.schemas import CATEGORICAL_FEATURES, FEATURE_COLUMNS, ID_COLUMNS

pytestmark = pytest.mark.integration
NAME = "loopline-slice-model"


class CountryModel(mlflow.pyfunc.PythonModel):
    """A stand-in model: fraud probability from amount_eur plus noise whose size depends on the country."""

    def __init__(self, noise: dict[str, float], seed: int = 0):
        self.noise, self.seed = noise, seed

    def predict(self, context, model_input, params=None):
        rng = np.random.default_rng(self.seed)
        signal = model_input["amount_eur"].to_numpy(dtype=float) / 100.0
        scale = model_input["country"].map(self.noise).to_numpy(dtype=float)
        return 1 / (1 + np.exp(-(signal + rng.normal(0, 1, len(model_input)) * scale - 3)))


def holdout(n: int = 6000) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({c: rng.random(n) for c in FEATURE_COLUMNS})
    for column in (*ID_COLUMNS, *CATEGORICAL_FEATURES):
        frame[column] = "x"
    frame["country"] = np.where(rng.random(n) < 0.8, "DE", "FR")
    frame["channel"] = rng.choice(["pos", "online", "atm"], n)
    frame["card_present"] = rng.integers(0, 2, n)
    frame["amount_eur"] = rng.exponential(150, n)
    frame["is_fraud"] = (rng.random(n) < 1 / (1 + np.exp(-(frame["amount_eur"] / 100 - 3)))).astype(int)
    return frame


@pytest.fixture
def client(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("slices", artifact_location=str(tmp_path / "art")))
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@pytest.fixture
def pg(postgres):
    schema = f"slc_{uuid.uuid4().hex[:8]}"
    postgres.migrate(schema)
    conn = postgres.connect_loader()
    yield conn, schema
    conn.close()


@pytest.fixture
def cfg():
    return load_config(
        environ={
            "LOOPLINE__GATE__ABSOLUTE_FLOOR": "0.6",
            "LOOPLINE__GATE__MIN_IMPROVEMENT": "0.005",
            "LOOPLINE__GATE__SLICES__MIN_POSITIVES": "10",  # the constructed slices are small
        }
    )


def log_run(model, frame: pd.DataFrame, tmp_path) -> str:
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=model, input_example=frame[list(FEATURE_COLUMNS)].head(3))
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        frame.to_parquet(folder / "holdout.parquet")
        mlflow.log_artifact(str(folder / "holdout.parquet"))
    return run.info.run_id


def gate(client, run_id, cfg, pg):
    conn, schema = pg
    # Stand-in models are cloudpickled pyfuncs (the per-country quality knob): these tests opt in to loading them.
    return registry.register_and_gate(
        client,
        run_id=run_id,
        model_name=NAME,
        gate=cfg.gate,
        threshold=0.5,
        triggered_by="test",
        reason="slices",
        conn=conn,
        schema=schema,
        allow_pickled=True,
    )


def test_a_challenger_that_wins_globally_but_loses_a_slice_is_rejected_naming_it(client, cfg, pg, tmp_path):
    frame = holdout()
    decision, _ = gate(client, log_run(CountryModel({"DE": 1.2, "FR": 1.2}), frame, tmp_path), cfg, pg)
    assert decision.promote

    lopsided = log_run(CountryModel({"DE": 0.0, "FR": 2.0}, seed=1), frame, tmp_path)
    decision, move = gate(client, lopsided, cfg, pg)
    candidate, champion = move.metrics["candidate"], move.metrics["champion"]
    assert candidate["roc_auc"] >= champion["roc_auc"] + cfg.gate.min_improvement  # it wins globally
    assert (decision.promote, move.alias) == (False, "challenger")
    assert "loses a slice" in decision.reason
    assert "slice country=FR" in decision.reason
    losses = move.metrics["slice_losses"]
    assert losses[0]["slice"] == "country"
    assert losses[0]["group"] == "FR"
    assert losses[0]["ci_high"] < 0  # the paired bootstrap: a loss, not sampling noise
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1

    # The decision and the slice are in the history row; every slice's metrics are on the candidate's run.
    conn, schema = pg
    with conn.cursor() as cur:
        cur.execute(f"SELECT alias, decision, metrics FROM {schema}.model_alias_history ORDER BY id DESC LIMIT 1")
        alias, reason, metrics = cur.fetchone()
    conn.commit()
    assert alias == "challenger"
    assert "country=FR" in reason
    assert json.loads(json.dumps(metrics))["slice_losses"][0]["group"] == "FR"
    sliced = mlflow.artifacts.load_dict(f"runs:/{lopsided}/gate/slices.json")
    fr = sliced["candidate"]["slices"]["country"]["FR"]
    assert fr["supported"]
    assert fr["rows"] >= cfg.gate.slices.min_rows
    assert {"roc_auc", "pr_auc", "recall_at_threshold", "fpr_at_threshold"} <= set(fr)
    assert sliced["champion"]["slices"]["country"]["FR"]["roc_auc"] > fr["roc_auc"] + cfg.gate.slices.tolerance
    parity = sliced["candidate"]["parity"]
    assert parity["attribute"] == cfg.gate.slices.fairness_attribute
    assert set(parity["by_group"]) == {"atm", "online", "pos"}
    assert 0 <= parity["demographic_parity_difference"] <= 1

    # The version's model card, rendered from the records, tells the same story.
    card = mlflow.artifacts.load_text(f"runs:/{lopsided}/model_card.md")
    assert f"# Model card: {NAME} v2" in card
    assert "| country | FR* |" in card
    assert "loses a slice" in card
    assert "lost slice country=FR" in card
    assert "paired interval [" in card
    assert "## Parity across `channel` (fairlearn)" in card

    # Better everywhere: promoted.
    even = log_run(CountryModel({"DE": 0.2, "FR": 0.2}, seed=2), frame, tmp_path)
    decision, move = gate(client, even, cfg, pg)
    assert decision.promote, decision.reason
    assert move.metrics["slice_losses"] == []


def test_a_slice_too_small_to_decide_is_reported_but_never_rejects(client, pg, tmp_path):
    cfg = load_config(
        environ={
            "LOOPLINE__GATE__ABSOLUTE_FLOOR": "0.6",
            "LOOPLINE__GATE__MIN_IMPROVEMENT": "0.005",
            "LOOPLINE__GATE__SLICES__MIN_ROWS": "100000",
        }
    )
    frame = holdout()
    gate(client, log_run(CountryModel({"DE": 1.2, "FR": 1.2}), frame, tmp_path), cfg, pg)
    decision, move = gate(client, log_run(CountryModel({"DE": 0.0, "FR": 2.0}, seed=1), frame, tmp_path), cfg, pg)
    assert decision.promote, decision.reason
    assert move.metrics["slice_losses"] == []
