"""Hyper-parameter search in the trainer, for real: Optuna with its study in Postgres, nested MLflow runs, a
trainer killed mid-search that resumes, and the version's threshold from the alert policy."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from loopline.training.synthetic import write_synthetic_lake

pytestmark = pytest.mark.integration

START = dt.date(2026, 1, 1)
CUTOFF = dt.date(2026, 1, 31)
TRIALS = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres) -> dict:
    root = tmp_path_factory.mktemp("search")
    write_synthetic_lake(root / "lake", START, 30, rows_per_day=250, seed=3)
    schema = f"search_{uuid.uuid4().hex[:8]}"  # the study's own schema (optuna creates its tables there)
    admin = postgres.connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    admin.close()
    host = postgres.host
    storage = (
        f"postgresql+psycopg2://{postgres.user}@/{postgres.database}?host={host}&port={postgres.port}"
        f"&options=-csearch_path%3D{schema}"
    )
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(root / "home"),
        "LOOPLINE__MLFLOW__ARTIFACT_URI": str(root / "mlflow-artifacts"),
        "LOOPLINE__DRIFT__REFERENCE_SAMPLE_SIZE": "300",
        "LOOPLINE__TRAINING__SEARCH__WARMUP_STEPS": "5",
        "LOOPLINE_SEARCH_STORAGE_URL": storage,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return {"root": root, "lake": str(root / "lake"), "tracking": f"sqlite:///{root / 'mlflow.db'}", "env": env,
            "storage": storage}  # fmt: skip


def command(world: dict, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "loopline.training", "--lake", world["lake"], "--tracking-uri", world["tracking"],
        "--cutoff", CUTOFF.isoformat(), "--window-days", "30", "--validation-days", "4", "--holdout-days", "5",
        "--label-maturity-days", "5", "--max-rounds", "80", "--search-trials", str(TRIALS),
        "--run-name", "searched", "--output-json", str(out),
    ]  # fmt: skip


def finished_trials(storage: str) -> int:
    import optuna

    try:
        summaries = optuna.get_all_study_summaries(storage=storage)
    except Exception:  # tables not created yet
        return 0
    if not summaries:
        return 0
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


def test_a_search_killed_midway_resumes_from_postgres_with_nested_runs(world):
    import mlflow
    from mlflow import MlflowClient

    out = world["root"] / "result.json"
    first = subprocess.Popen(
        command(world, out), env=world["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while finished_trials(world["storage"]) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert first.poll() is None, "the search ended before it could be killed"
    first.send_signal(signal.SIGKILL)  # no cleanup: the study and the MLflow runs stay as they were
    first.wait()
    before = finished_trials(world["storage"])
    assert 2 <= before < TRIALS

    second = subprocess.run(command(world, out), env=world["env"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    result = json.loads(out.read_text())
    search = result["search"]
    assert search["storage"] == "rdb"
    assert search["resumed"] >= before  # the trials of the killed attempt were kept
    assert search["completed"] + search["pruned"] == TRIALS  # the budget counts across attempts
    assert finished_trials(world["storage"]) == TRIALS

    client = MlflowClient(world["tracking"])
    mlflow.set_tracking_uri(world["tracking"])
    try:
        parent = client.get_run(result["run_id"])
        assert parent.data.tags["loopline.search"] == "on"
        assert parent.data.params["search.study"] == search["study_name"]
        for key, value in search["params"].items():
            assert float(parent.data.params[f"search.best.{key}"]) == pytest.approx(value)
        # The winner's parameters are the model's parameters on the parent run.
        assert float(parent.data.params["learning_rate"]) == pytest.approx(search["params"]["learning_rate"])
        experiment = parent.info.experiment_id
        children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'")
        assert len(children) == TRIALS - search["resumed"]
        states = {run.data.tags["loopline.search.state"] for run in children}
        assert states <= {"complete", "pruned"}
        # The killed attempt's parent and its trial that was running are not left RUNNING forever.
        running = client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'")
        assert running == []
    finally:
        mlflow.set_tracking_uri(None)

    # The version's threshold comes from the alert policy on validation, recorded with it.
    decision = result["threshold"]
    assert decision["policy"] == "alert_budget"
    assert 0 < decision["expected_alert_rate"] <= 0.02
    assert parent.data.params["threshold"] == str(decision["threshold"])
    assert parent.data.tags["loopline.threshold_policy"] == "alert_budget"


def test_a_policy_no_threshold_can_meet_fails_the_training_naming_the_setting(world):
    """Exit code 2 and one line naming the setting; the trainer's result is an error, so nothing is gated."""
    env = {
        **world["env"],
        "LOOPLINE__SCORING__THRESHOLD_POLICY__KIND": "target_precision",
        "LOOPLINE__SCORING__THRESHOLD_POLICY__TARGET_PRECISION": "1.0",
        "LOOPLINE__SCORING__THRESHOLD_POLICY__MIN_ALERTS": "100000",
    }
    out = world["root"] / "impossible.json"
    args = [*command(world, out)]
    args[args.index("--search-trials") + 1] = "0"
    args[args.index("--run-name") + 1] = "impossible"
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "scoring.threshold_policy.target_precision" in result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith('LOOPLINE_RESULT {"error"')
    assert not out.exists()


def test_search_with_the_same_seed_repeats_itself():
    """Two in-memory searches of the same data and seed sample the same parameters and pick the same winner."""
    import mlflow

    from loopline.config import load_config
    from loopline.training.models import TrainParams
    from loopline.training.search import run_search
    from tests.models import training_frame

    features, labels = training_frame(days=3, rows=800, seed=4)
    split = int(len(features) * 0.75)
    search = load_config().training.search.model_copy(update={"trials": 3, "storage_url": None})
    results = []
    os.environ.pop("LOOPLINE_SEARCH_STORAGE_URL", None)
    tracking = f"sqlite:///{Path(os.environ.get('TMPDIR', '/tmp')) / f'search-{uuid.uuid4().hex[:6]}.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("search-seed")  # not whatever experiment an earlier test left active (another store's)
    try:
        for attempt in range(2):
            with mlflow.start_run(run_name=f"seeded-{attempt}"):
                results.append(
                    run_search(
                        model_type="xgboost",
                        train=features[:split],
                        y_train=labels[:split],
                        validation=features[split:],
                        y_validation=labels[split:],
                        base=TrainParams(seed=7, max_rounds=30),
                        device="cpu",
                        search=search,
                        name=f"seeded-{attempt}",
                        run_name=f"seeded-{attempt}",
                    )
                )
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert results[0].params == results[1].params
    assert results[0].best_value == pytest.approx(results[1].best_value)
    assert results[0].storage == "memory"
