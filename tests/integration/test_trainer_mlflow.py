"""``python -m loopline.training`` as a subprocess against a hand-built lake and a throwaway SQLite MLflow store.

What the champion gate and batch scoring rely on is checked through MLflow's own client: the run with its
params, metrics and tags, the plots and the holdout/reference artifacts, and a pyfunc whose predictions on
the logged holdout reproduce the logged AUC when recomputed with sklearn.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from loopline.schemas import FEATURE_COLUMNS
from loopline.training.synthetic import write_synthetic_lake

pytestmark = pytest.mark.integration

START = dt.date(2026, 1, 1)
CUTOFF = dt.date(2026, 1, 31)
REFERENCE_ROWS = 500


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("trainer")
    lake = write_synthetic_lake(root / "lake", START, 30, rows_per_day=250, seed=3)
    assert lake.frauds > 100
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(root / "home"),
        "LOOPLINE__MLFLOW__ARTIFACT_URI": str(root / "mlflow-artifacts"),
        "LOOPLINE__DRIFT__REFERENCE_SAMPLE_SIZE": str(REFERENCE_ROWS),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return {"root": root, "lake": str(root / "lake"), "tracking": f"sqlite:///{root / 'mlflow.db'}", "env": env}


def _train(world: dict, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loopline.training", "--lake", world["lake"], "--tracking-uri", world["tracking"]]
    return subprocess.run([*command, *args], env=world["env"], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(world) -> dict:
    out = world["root"] / "result.json"
    result = _train(
        world,
        "--cutoff",
        CUTOFF.isoformat(),
        "--model-type",
        "xgboost",
        "--window-days",
        "30",
        "--validation-days",
        "4",
        "--holdout-days",
        "5",
        "--label-maturity-days",
        "5",
        "--max-rounds",
        "60",
        "--reason",
        "drift on amount_eur",
        "--triggered-by",
        "drift_monitor",
        "--output-json",
        str(out),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("LOOPLINE_RESULT ")
    document = json.loads(last.removeprefix("LOOPLINE_RESULT "))
    assert json.loads(out.read_text()) == document
    return document


def test_result_document(trained):
    assert trained["status"] == "ok"
    assert trained["model_uri"] == f"runs:/{trained['run_id']}/model"
    assert trained["device"] == "cpu"
    assert trained["train_rows"] == trained["fingerprint"]["splits"]["train"]["rows"] > 0
    assert trained["rows_per_second"] > 0
    assert trained["seconds"] > 0
    assert 0.5 < trained["metrics"]["holdout_roc_auc"] <= 1.0
    assert trained["fingerprint"]["splits"]["holdout"] == {
        "start": "2026-01-22",
        "end": "2026-01-26",
        "rows": trained["fingerprint"]["splits"]["holdout"]["rows"],
        "positives": trained["fingerprint"]["splits"]["holdout"]["positives"],
    }


def test_run_params_metrics_tags_and_artifacts(trained, world):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=world["tracking"])
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "loopline-fraud"
    assert experiment.artifact_location.startswith(str(world["root"] / "mlflow-artifacts"))

    params = run.data.params
    assert params["model_type"] == "xgboost"
    assert params["cutoff"] == "2026-01-31"
    assert params["device"] == "cpu"
    assert params["window_days"] == "30"
    assert params["max_rounds"] == "60"
    assert params["fingerprint.data_sha256"] == trained["fingerprint"]["data_sha256"]
    assert params["fingerprint.splits.train.rows"] == str(trained["train_rows"])

    metrics = run.data.metrics
    for name in ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold", "brier", "ece", "log_loss"):
        assert f"holdout_{name}" in metrics
        assert f"val_{name}" in metrics
    assert metrics["holdout_roc_auc"] == pytest.approx(trained["metrics"]["holdout_roc_auc"])
    assert metrics["train_rows_per_second"] > 0
    assert metrics["train_seconds"] > 0

    tags = run.data.tags
    assert tags["loopline.trigger"] == "drift_monitor"
    assert tags["loopline.reason"] == "drift on amount_eur"
    assert tags["loopline.data_sha256"] == trained["fingerprint"]["data_sha256"]

    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"holdout.parquet", "reference_sample.parquet", "fingerprint.json", "plots", "xgboost"} <= artifacts
    plots = {item.path for item in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {f"plots/holdout_{kind}.png" for kind in ("roc", "pr", "calibration")} | {
        "plots/feature_importance.png"
    }

    reference = pd.read_parquet(client.download_artifacts(run.info.run_id, "reference_sample.parquet"))
    assert len(reference) == REFERENCE_ROWS
    assert set(reference.columns) == {*FEATURE_COLUMNS, "score"}
    fingerprint = json.loads(Path(client.download_artifacts(run.info.run_id, "fingerprint.json")).read_text())
    assert fingerprint["feature_partitions"]["2026-01-01"] == "v1"


def test_pyfunc_reproduces_the_logged_auc(trained, world, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils
    from sklearn.metrics import roc_auc_score

    # set_tracking_uri also exports MLFLOW_TRACKING_URI: both are restored afterwards, or later tests
    # (train_model's e2e) would talk to this test's store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["tracking"])
    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    mlflow.set_tracking_uri(world["tracking"])
    client = MlflowClient(tracking_uri=world["tracking"])
    holdout = pd.read_parquet(client.download_artifacts(trained["run_id"], "holdout.parquet"))
    assert len(holdout) == trained["fingerprint"]["splits"]["holdout"]["rows"]
    assert set(FEATURE_COLUMNS) <= set(holdout.columns)
    assert sorted(holdout["ds"].unique()) == [f"2026-01-{d}" for d in range(22, 27)]

    model = mlflow.pyfunc.load_model(trained["model_uri"])
    scores = model.predict(holdout[list(FEATURE_COLUMNS)])
    assert roc_auc_score(holdout["is_fraud"], scores) == pytest.approx(trained["metrics"]["holdout_roc_auc"], abs=1e-9)
    # The raw booster for SHAP-style contributions travels with the run.
    assert client.download_artifacts(trained["run_id"], "xgboost/booster.json").endswith("booster.json")
    contributions = model.unwrap_python_model().contributions(holdout.head(3))
    assert contributions.shape[0] == 3


def test_no_data_exits_2_with_one_line(world):
    result = _train(world, "--cutoff", "2025-03-01", "--tracking-uri", f"sqlite:///{world['root'] / 'unused.db'}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("loopline.training: error: no committed feature partitions")
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1].removeprefix("LOOPLINE_RESULT "))["exit_code"] == 2
    assert not (world["root"] / "unused.db").exists()  # bad input logs nothing to MLflow


def test_bad_config_exits_2_naming_the_key(world):
    env = {**world["env"], "LOOPLINE__TRAINING__WINDOW_DAYS": "many"}
    command = [sys.executable, "-m", "loopline.training", "--cutoff", CUTOFF.isoformat(), "--lake", world["lake"]]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "training.window_days" in result.stderr
