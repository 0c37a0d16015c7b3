"""Real Loopline models for tests that need one: trained in seconds on synthetic features, logged as the
trainer logs them and registered in a real MLflow store."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.training.models import FraudModel, TrainParams, train_model
from loopline.training.synthetic import synthetic_day


def training_frame(days: int = 6, rows: int = 2000, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    frames = [synthetic_day(dt.date(2026, 1, 1) + dt.timedelta(days=i), rows, seed) for i in range(days)]
    features = pd.concat([frame for frame, _ in frames], ignore_index=True)
    probability = np.concatenate([p for _, p in frames])
    labels = (np.random.default_rng(seed).random(len(probability)) < probability).astype(int)
    return features, labels


def fit(model_type: str = "xgboost", seed: int = 1, rounds: int = 60) -> FraudModel:
    features, labels = training_frame(seed=seed)
    split = int(len(features) * 0.8)
    params = TrainParams(max_rounds=rounds, max_epochs=3, seed=seed)
    return train_model(
        model_type, features[:split], labels[:split], features[split:], labels[split:], params, device="cpu"
    )


def register(
    model: FraudModel,
    tracking_uri: str,
    artifacts: Path,
    name: str,
    alias: str | None,
    threshold: float = 0.2,
    *,
    reference: pd.DataFrame | None = None,
    metrics: dict[str, float] | None = None,
) -> int:
    """Log ``model`` as the trainer does (pyfunc + holdout), register it, point ``alias`` at it; returns the version.

    ``reference`` is the drift reference sample logged with it (default: 100 holdout rows with a zero score);
    ``metrics`` the run's metrics (e.g. ``holdout_roc_auc``).
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)  # also sets MLFLOW_TRACKING_URI: restored below
    try:
        return _register(model, tracking_uri, artifacts, name, alias, threshold, reference, metrics or {})
    finally:
        mlflow.set_tracking_uri(previous)
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def _register(
    model: FraudModel,
    tracking_uri: str,
    artifacts: Path,
    name: str,
    alias: str | None,
    threshold: float,
    reference: pd.DataFrame | None,
    metrics: dict[str, float],
):
    import mlflow
    from mlflow import MlflowClient

    from loopline.training.tracking import log_training_run

    if mlflow.get_experiment_by_name("scoring-tests") is None:
        mlflow.create_experiment("scoring-tests", artifact_location=str(artifacts))
    mlflow.set_experiment("scoring-tests")
    features, labels = training_frame(days=1, rows=500, seed=9)
    holdout = features.assign(is_fraud=labels, ds=dt.date(2026, 1, 1))
    with mlflow.start_run() as run:
        log_training_run(
            run,
            model=model,
            params={"model_type": model.model_type},
            fingerprint={},
            metrics=metrics,
            plots=[],
            holdout=holdout,
            reference=holdout.head(100).assign(score=0.0) if reference is None else reference,
            threshold=threshold,
        )
    version = int(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
    if alias:
        MlflowClient(tracking_uri).set_registered_model_alias(name, alias, str(version))
    return version


def record_digests(postgres, schema: str, tracking_uri: str, name: str, version: int) -> dict[str, str]:
    """Record a version's artifact digests as the gate does for a version it judged (for tests that point
    aliases directly, bypassing the gate; scoring refuses versions without recorded digests)."""
    import tempfile

    from mlflow import MlflowClient

    from loopline import artifacts, db

    conn = postgres.connect()
    try:
        db.migrate(conn, schema)
        with tempfile.TemporaryDirectory() as tmp:
            folder = artifacts.download_version(MlflowClient(tracking_uri), name, version, Path(tmp))
            digests = artifacts.digest_tree(folder)
        artifacts.record_digests(conn, schema, name, version, digests)
        conn.commit()
    finally:
        conn.close()
    return digests
