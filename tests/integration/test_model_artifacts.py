"""Model artifacts carry no code: digest-verified native weights, no unpickling, crash-safe alias history.

Real MLflow store (SQLite + a local artifact folder) and the real Postgres of the session; models are real
Loopline models (XGBoost / the torch MLP) logged exactly as the trainer logs them.
"""

from __future__ import annotations

import datetime as dt
import pickle
import uuid
from pathlib import Path

import cloudpickle
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from loopline import artifacts, registry
from loopline.config import load_config
from loopline.scoring import ModelRef, load_packaged, package_model
from loopline.training.tracking import log_training_run
from tests.models import fit, training_frame

pytestmark = pytest.mark.integration
NAME = "loopline-artifacts-test"


class Crash(BaseException):
    """A process dying between two steps: nothing after it runs (not even ``except Exception`` handlers)."""


@pytest.fixture(scope="module")
def xgb():
    return fit("xgboost", seed=1, rounds=30)


@pytest.fixture
def client(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("artifacts", artifact_location=str(tmp_path / "art")))
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@pytest.fixture
def pg(postgres):
    """A schema of its own (other tests migrate ``loopline`` in the same database), migrated as the owner, and a
    connection as the loader: the role the gate and scoring tasks log in as."""
    schema = f"art_{uuid.uuid4().hex[:8]}"
    postgres.migrate(schema)
    conn = postgres.connect_loader()
    yield conn, schema
    conn.close()


@pytest.fixture
def cfg():
    # identical models tie, and a tie is promoted: deterministic champion moves without luck in the metrics
    return load_config(environ={"LOOPLINE__GATE__ABSOLUTE_FLOOR": "0.5", "LOOPLINE__GATE__MIN_IMPROVEMENT": "0"})


def holdout() -> pd.DataFrame:
    features, labels = training_frame(days=1, rows=1500, seed=9)
    return features.assign(is_fraud=labels, ds=dt.date(2026, 1, 1))


def log_native(model) -> str:
    """A training run as the trainer leaves it (pyfunc as code + native weights, holdout); returns the run id."""
    frame = holdout()
    with mlflow.start_run() as run:
        log_training_run(
            run,
            model=model,
            params={"model_type": model.model_type},
            fingerprint={},
            metrics={},
            plots=[],
            holdout=frame,
            reference=frame.head(50).assign(score=0.0),
            threshold=0.2,
        )
    return run.info.run_id


def log_pickled(model, tmp_path: Path) -> str:
    """A run logged the old way: the Loopline pyfunc wrapper cloudpickled (``python_model.pkl``)."""
    from loopline.training.pyfunc import ARTIFACT_KEY, LooplineModel

    frame = holdout()
    with mlflow.start_run() as run:
        folder = model.save(tmp_path / run.info.run_id / ARTIFACT_KEY)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=LooplineModel(model_type=model.model_type, threshold=0.2),
            artifacts={ARTIFACT_KEY: str(folder)},
        )
        frame.to_parquet(tmp_path / run.info.run_id / "holdout.parquet")
        mlflow.log_artifact(str(tmp_path / run.info.run_id / "holdout.parquet"))
    return run.info.run_id


def gate(client, run_id, cfg, pg, allow_pickled=False):
    conn, schema = pg
    return registry.register_and_gate(
        client,
        run_id=run_id,
        model_name=NAME,
        gate=cfg.gate,
        threshold=0.2,
        triggered_by="test",
        reason="artifacts",
        conn=conn,
        schema=schema,
        allow_pickled=allow_pickled,
    )


def stored(client, version: int) -> Path:
    """The version's artifact folder in the store (what someone with write access to the store can edit)."""
    return Path(client.get_model_version_download_uri(NAME, str(version)).removeprefix("file://"))


def package(client, version: int, pg, allow_pickled=False) -> bytes:
    conn, schema = pg
    ref = ModelRef(NAME, version, client.get_model_version(NAME, str(version)).run_id, "champion")
    return package_model(ref, client.tracking_uri, conn=conn, schema=schema, allow_pickled=allow_pickled)


def history(pg) -> list[tuple]:
    conn, schema = pg
    with conn.cursor() as cur:
        cur.execute(f"SELECT alias, version, state, triggered_by FROM {schema}.model_alias_history ORDER BY id")
        rows = cur.fetchall()
    conn.commit()
    return rows


def champion(client) -> int:
    return int(client.get_model_version_by_alias(NAME, "champion").version)


# ---------------------------------------------------------------------------------------------------------


def test_promotion_records_every_file_digest_in_the_history_transaction(client, cfg, pg, xgb):
    decision, move = gate(client, log_native(xgb), cfg, pg)
    assert (decision.promote, move.version) == (True, 1)
    conn, schema = pg
    recorded = artifacts.recorded_digests(conn, schema, NAME, 1)
    assert recorded == artifacts.digest_tree(stored(client, 1))
    assert {"MLmodel", "artifacts/fraud_model/meta.json", "artifacts/fraud_model/booster.json"} <= set(recorded)
    assert not [path for path in recorded if path.endswith(".pkl")]  # logged as code: nothing pickled
    assert history(pg) == [("champion", 1, "applied", "test")]
    # the untampered version scores: the blob rebuilds the model from JSON spec + native weights
    batch = holdout().head(200)
    assert load_packaged(package(client, 1, pg)).predict_proba(batch) == pytest.approx(xgb.predict_proba(batch))


@pytest.mark.parametrize(
    ("change", "path", "problem"),
    [
        ("flip", "artifacts/fraud_model/booster.json", "changed"),
        ("add", "artifacts/fraud_model/extra.py", "was added"),
        ("remove", "input_example.json", "is missing"),
    ],
)
def test_a_changed_added_or_missing_artifact_is_refused_by_scoring(client, cfg, pg, xgb, change, path, problem):
    gate(client, log_native(xgb), cfg, pg)
    target = stored(client, 1) / path
    if change == "flip":  # one byte of the weights, after promotion
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif change == "add":
        target.write_text("import os; os.system('echo owned')\n")
    else:
        target.unlink()
    with pytest.raises(artifacts.ArtifactTampered) as refused:
        package(client, 1, pg)
    message = str(refused.value)
    assert f"model {NAME!r} version 1" in message
    assert repr(path) in message
    assert problem in message
    assert (refused.value.model_name, refused.value.version, refused.value.path) == (NAME, 1, path)


def test_the_scoring_task_refuses_a_tampered_champion_and_shadow(client, cfg, pg, xgb, postgres, monkeypatch):
    """The path batch_score's champion and shadow tasks take (digests from the task's Postgres connection)."""
    from airflow.sdk.exceptions import AirflowFailException

    from loopline.orchestration.scoring_tasks import verified_package

    _, schema = pg
    monkeypatch.setenv("LOOPLINE__POSTGRES__SCHEMA", schema)
    task_cfg = load_config()
    gate(client, log_native(xgb), cfg, pg)
    gate(client, log_native(fit("xgboost", seed=2, rounds=5)), load_config(), pg)  # weaker: challenger
    assert int(client.get_model_version_by_alias(NAME, "challenger").version) == 2
    for version in (1, 2):
        assert verified_package(task_cfg, ModelRef(NAME, version, "r", "x"), client.tracking_uri)
        weights = stored(client, version) / "artifacts/fraud_model/booster.json"
        weights.write_bytes(weights.read_bytes().replace(b'"', b"'", 1))
        with pytest.raises(AirflowFailException, match=f"version {version}: artifact 'artifacts/fraud_model/boo"):
            verified_package(task_cfg, ModelRef(NAME, version, "r", "x"), client.tracking_uri)


def test_a_version_never_gated_is_not_scored_until_its_digests_are_recorded(client, pg, xgb, monkeypatch, capsys):
    from loopline import cli
    from loopline.config import get_config

    run_id = log_native(xgb)
    version = int(mlflow.register_model(f"runs:/{run_id}/model", NAME).version)
    with pytest.raises(artifacts.DigestsMissing, match="no recorded artifact digests"):
        package(client, version, pg)
    # an operator trusts it as it is now (a version gated before digests were recorded)
    for key, value in {
        "LOOPLINE__POSTGRES__SCHEMA": pg[1],
        "LOOPLINE__MLFLOW__TRACKING_URI": client.tracking_uri,
        "LOOPLINE__MLFLOW__REGISTERED_MODEL": NAME,
    }.items():
        monkeypatch.setenv(key, value)
    get_config.cache_clear()
    try:
        assert cli.main(["model", "record-digests", "--version", str(version)]) == 0
        assert cli.main(["model", "record-digests", "--version", str(version)]) == 0
    finally:
        monkeypatch.undo()
        get_config.cache_clear()
    out = capsys.readouterr().out
    assert "recorded the SHA-256 of" in out
    assert "files match them" in out
    assert package(client, version, pg)


def test_a_champion_set_out_of_band_is_not_trusted_by_the_next_gate(client, cfg, pg, xgb):
    """Whoever can write to the registry points `champion` at a version of their own: the next gate must not
    hash it into trust (scoring would then load it); it stops, naming the version, and records nothing for it."""
    rogue = int(mlflow.register_model(f"runs:/{log_native(xgb)}/model", NAME).version)
    client.set_registered_model_alias(NAME, "champion", str(rogue))
    with pytest.raises(registry.GateError, match=rf"champion cannot be loaded safely.*version {rogue}"):
        gate(client, log_native(xgb), cfg, pg)
    assert artifacts.recorded_digests(pg[0], pg[1], NAME, rogue) == {}
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == rogue  # nothing moved
    with pytest.raises(artifacts.DigestsMissing):
        package(client, rogue, pg)


def test_a_pickled_model_needs_the_opt_in(client, cfg, pg, xgb, tmp_path, monkeypatch):
    run_id = log_pickled(xgb, tmp_path)
    unpickled = []
    real_load = cloudpickle.load
    monkeypatch.setattr(cloudpickle, "load", lambda *a, **k: unpickled.append(1) or real_load(*a, **k))
    with pytest.raises(registry.GateError, match=r"registry\.allow_pickled_models") as refused:
        gate(client, run_id, cfg, pg)
    assert "arbitrary code" in str(refused.value)
    assert unpickled == []  # refused before anything was unpickled
    assert client.get_model_version(NAME, "1").tags["loopline.gate"] == "rejected: PickledModelRefused"

    decision, move = gate(client, run_id, cfg, pg, allow_pickled=True)  # the explicit, unsafe opt-in
    assert (decision.promote, move.version) == (True, 1)
    assert unpickled  # it really was the pickle that loaded
    with pytest.raises(artifacts.PickledModelRefused, match="LOOPLINE__REGISTRY__ALLOW_PICKLED_MODELS"):
        package(client, 1, pg)
    batch = holdout().head(100)
    blob = package(client, 1, pg, allow_pickled=True)
    assert load_packaged(blob).predict_proba(batch) == pytest.approx(xgb.predict_proba(batch))
    # the config setting, defaulting to off
    assert load_config().registry.allow_pickled_models is False
    env = {"LOOPLINE__REGISTRY__ALLOW_PICKLED_MODELS": "true"}
    assert load_config(environ=env).registry.allow_pickled_models is True


def test_no_pickle_is_loaded_on_the_gate_and_scoring_path(client, cfg, pg, tmp_path, monkeypatch):
    import torch

    mlp = fit("mlp", seed=3)
    runs = [log_native(mlp), log_native(mlp), log_pickled(mlp, tmp_path)]

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled on the gate/scoring path")

    real_torch_load = torch.load

    def weights_only(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real_torch_load(*args, **kwargs)

    for module, name in ((pickle, "load"), (pickle, "loads"), (cloudpickle, "load"), (cloudpickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", weights_only)

    gate(client, runs[0], cfg, pg)
    decision, _ = gate(client, runs[1], cfg, pg)  # loads the candidate and the champion
    assert decision.promote
    assert champion(client) == 2
    batch = holdout().head(100)
    for version in (1, 2):
        model = load_packaged(package(client, version, pg))
        assert model.predict_proba(batch) == pytest.approx(mlp.predict_proba(batch), rel=1e-5)
    # the patches are live: the opted-in pickled model does hit them
    with pytest.raises(registry.GateError, match="unpickled on the gate/scoring path"):
        gate(client, runs[2], cfg, pg, allow_pickled=True)


def test_a_crash_between_the_alias_move_and_its_history_row_is_reconciled(client, cfg, pg, xgb, monkeypatch):
    gate(client, log_native(xgb), cfg, pg)

    # 1. The alias moved, then the process died before the history row was marked applied.
    real_mark = registry._mark

    def die_before_marking(*args):
        raise Crash("killed after the MLflow alias move")

    monkeypatch.setattr(registry, "_mark", die_before_marking)
    with pytest.raises(Crash):
        gate(client, log_native(xgb), cfg, pg)
    monkeypatch.setattr(registry, "_mark", real_mark)
    assert champion(client) == 2
    assert history(pg)[-1] == ("champion", 2, "pending", "test")  # the two systems disagree
    conn, schema = pg
    assert [state for _, state in registry.reconcile(client, conn, schema)] == ["applied"]
    assert history(pg) == [("champion", 1, "applied", "test"), ("champion", 2, "applied", "test")]
    assert registry.reconcile(client, conn, schema) == []  # idempotent

    # 2. The history row was written, then the process died before the alias moved.
    def die_before_the_move(*args):
        raise Crash("killed before the MLflow alias move")

    third = log_native(xgb)
    real_apply = registry._apply
    monkeypatch.setattr(registry, "_apply", die_before_the_move)
    with pytest.raises(Crash):
        gate(client, third, cfg, pg)
    monkeypatch.setattr(registry, "_apply", real_apply)
    assert champion(client) == 2
    assert history(pg)[-1] == ("champion", 3, "pending", "test")
    # the next gate reconciles first: the move that never happened is abandoned, then the retry applies
    decision, _ = gate(client, third, cfg, pg)
    assert (decision.promote, champion(client)) == (True, 3)
    assert [row[1:3] for row in history(pg)] == [(1, "applied"), (2, "applied"), (3, "abandoned"), (3, "applied")]
    with conn.cursor() as cur:
        cur.execute(f"SELECT version FROM {schema}.champion_by_day ORDER BY day DESC LIMIT 1")
        assert cur.fetchone()[0] == 3
    conn.commit()


def test_a_rolled_back_version_regated_stays_challenger(client, cfg, pg, xgb):
    gate(client, log_native(xgb), cfg, pg)
    second = log_native(xgb)
    assert gate(client, second, cfg, pg)[0].promote
    conn, schema = pg
    rolled = registry.rollback(
        client, NAME, triggered_by="rollback by test", reason="bad night", conn=conn, schema=schema
    )
    assert (rolled.version, rolled.previous_version, champion(client)) == (1, 2, 1)

    decision, move = gate(client, second, cfg, pg)  # a retried or re-triggered gate of the same run
    assert (decision.promote, move.alias, move.version) == (False, "challenger", 2)
    assert "was champion and was rolled back" in decision.reason
    assert champion(client) == 1
    # the history table alone is evidence enough (a registry whose tags were edited)
    client.delete_model_version_tag(NAME, "2", registry.ROLLED_BACK_TAG)
    decision, _ = gate(client, second, cfg, pg)
    assert not decision.promote
    assert "rolled back to v1" in decision.reason
    assert champion(client) == 1
    assert [row[:3] for row in history(pg)] == [
        ("champion", 1, "applied"),
        ("champion", 2, "applied"),
        ("champion", 1, "applied"),
        ("challenger", 2, "applied"),
        ("challenger", 2, "applied"),
    ]
