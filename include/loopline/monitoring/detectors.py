"""Detectors built once per model version (and per drift settings), kept as MLflow artifacts of the model run,
and the warming features of a reference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from loopline import lake as tables
from loopline.drift import DetectorSettings, feature_horizons, warming_features
from loopline.lake import Lake
from loopline.monitoring.inputs import DETECTOR_ARTIFACT, REFERENCE_ARTIFACT, MissingInput

if TYPE_CHECKING:
    from loopline.config import DriftConfig, LooplineConfig
    from loopline.drift import DriftDetector


def detector_key(cfg: DriftConfig) -> str:
    """What a fitted detector depends on besides the reference (the backend does not: both load one folder)."""
    settings = {
        **DetectorSettings.from_config(cfg).to_state(),
        "reference_sample_size": cfg.reference_sample_size,
        "format": 3,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def cached_detector(client: Any, run_id: str, cfg: DriftConfig, workdir: Path) -> tuple[DriftDetector, bool]:
    """The model run's detector for these settings: downloaded when cached, else fitted and cached.

    Returns ``(detector, built_now)``. Raises :class:`MissingInput` when the run has no reference sample.
    """
    from mlflow.exceptions import MlflowException

    from loopline.drift import build_detector, load_detector

    artifact = f"{DETECTOR_ARTIFACT}/{detector_key(cfg)}"
    cached = {item.path for item in client.list_artifacts(run_id, DETECTOR_ARTIFACT)}
    if artifact in cached:
        folder = client.download_artifacts(run_id, artifact, str(workdir))
        return load_detector(folder, backend=cfg.backend), False
    try:
        path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, str(workdir))
    except (MlflowException, OSError) as exc:
        raise MissingInput(
            f"model run {run_id} has no {REFERENCE_ARTIFACT}: it was not logged by the trainer, so there is "
            "nothing to test drift against; retrain the model (train_model) to get one"
        ) from exc
    reference = pd.read_parquet(path)
    detector = build_detector(cfg, reference, seed=0)
    folder = detector.save(workdir / "detector" / detector_key(cfg))
    client.log_artifacts(run_id, str(folder), artifact)
    return detector, True


def reference_frame(client: Any, run_id: str, workdir: Path) -> pd.DataFrame:
    """The model run's reference sample (for the report's plots)."""
    return pd.read_parquet(client.download_artifacts(run_id, REFERENCE_ARTIFACT, str(workdir)))


def warming(cfg: LooplineConfig, lake_root: str, reference: pd.DataFrame) -> tuple[str, ...]:
    """The features whose history window was not yet full on the reference's first day (see
    :func:`loopline.drift.warming_features`); none when ``drift.count_warming_features`` is set."""
    if cfg.drift.count_warming_features or reference.empty:
        return ()
    lake_start = Lake(lake_root).first_day(tables.RAW_TRANSACTIONS)
    if lake_start is None:
        return ()
    reference_start = pd.to_datetime(reference["event_time"], utc=True).min().date()
    horizons = feature_horizons(
        cfg.features.window_hours(),
        risk_window_days=cfg.features.risk_window_days,
        label_maturity_days=cfg.features.label_maturity_days,
    )
    return warming_features(horizons, lake_start, reference_start)
