"""A lake and registry for drift_monitor runs: synthetic feature days scored by a real registered champion.

Days from ``drift_start`` on carry a covariate shift (amounts x3, transactions later in the day), written as
a new committed version of their feature partitions; every day gets a scores partition as batch_score
writes it, from the model in-process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from loopline import lake as tables
from loopline.lake import Lake
from loopline.schemas import FEATURE_COLUMNS
from loopline.scoring import score_batch
from loopline.training.synthetic import write_partition, write_synthetic_lake
from tests.models import fit, register

THRESHOLD = 0.2


def shift(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["amount_eur"] = (out["amount_eur"] * 3).astype(out["amount_eur"].dtype)
    out["log_amount"] = np.log1p(out["amount_eur"]).astype(out["log_amount"].dtype)
    out["hour_of_day"] = np.minimum(out["hour_of_day"] + 6, 23).astype(out["hour_of_day"].dtype)
    return out


def card_testing(frame: pd.DataFrame, share: float = 0.03, seed: int = 0) -> pd.DataFrame:
    """A fraud pattern, not a covariate shift: ``share`` of the night's rows become small card-not-present
    charges (the card_testing segment grows; no whole feature distribution moves by the drift floor)."""
    out = frame.copy()
    rng = np.random.default_rng(seed)
    rows = rng.random(len(out)) < share
    out.loc[rows, "amount_eur"] = np.asarray(rng.uniform(0.5, 4.0, int(rows.sum())), dtype=out["amount_eur"].dtype)
    out["log_amount"] = np.log1p(out["amount_eur"]).astype(out["log_amount"].dtype)
    out.loc[rows, "card_present"] = 0
    return out


def register_champion(model, tracking_uri: str, artifacts: Path, name: str, reference: pd.DataFrame) -> tuple[int, str]:
    """Log ``model`` as the trainer does, with a real reference sample, and make it champion: (version, run id)."""
    from mlflow import MlflowClient

    version = register(
        model,
        tracking_uri,
        artifacts,
        name,
        "champion",
        THRESHOLD,
        reference=reference,
        metrics={"holdout_roc_auc": 0.97},
    )
    return version, MlflowClient(tracking_uri).get_model_version(name, str(version)).run_id


def scored_lake(
    lake_root: Path,
    tracking_uri: str,
    artifacts: Path,
    name: str,
    *,
    start: dt.date,
    days: int,
    drift_start: dt.date,
    rows: int,
    drift: Callable[[pd.DataFrame], pd.DataFrame] = shift,
) -> str:
    """Write the lake and register the champion; returns the champion's run id. ``drift`` changes the
    feature rows of the days from ``drift_start`` on (default: the covariate :func:`shift`)."""
    lake = Lake(str(lake_root))
    write_synthetic_lake(lake_root, start, days, rows_per_day=rows, seed=21)
    model = fit("xgboost", seed=5)
    history = pd.concat(
        [pd.read_parquet(lake.partition(tables.FEATURES, start + dt.timedelta(days=i))) for i in (0, 1)]
    )
    reference = history[list(FEATURE_COLUMNS)].reset_index(drop=True)
    reference["score"] = model.predict_proba(reference)
    version, run_id = register_champion(model, tracking_uri, artifacts, name, reference)
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        features = pd.read_parquet(lake.partition(tables.FEATURES, day))
        if day >= drift_start:
            features = drift(features)
            write_partition(lake, tables.FEATURES, day, features, version="v2")
        scores = score_batch(model, features, threshold=THRESHOLD, explain="none", reason_codes=0)
        scores.insert(0, "ds", day)
        scores["threshold"] = THRESHOLD
        scores["model_name"] = name
        scores["model_version"] = version
        scores["model_run_id"] = run_id
        scores["scored_at"] = pd.Timestamp("2026-02-01", tz="UTC")
        write_partition(lake, tables.SCORES, day, scores)
    return run_id
