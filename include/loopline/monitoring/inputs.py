"""The night's inputs: the scored day (the day's committed features with the champion's committed scores),
the error of a missing input, and a scratch folder for one task's artifacts.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass

import pandas as pd

from loopline import lake as tables
from loopline.db import _IDENTIFIER
from loopline.drift import SCORE_COLUMN
from loopline.lake import Lake
from loopline.schemas import FEATURE_COLUMNS

REFERENCE_ARTIFACT = "reference_sample.parquet"
DETECTOR_ARTIFACT = "drift_detector"
SCORE_COLUMNS = ("transaction_id", SCORE_COLUMN, "threshold", "model_name", "model_version", "model_run_id")


class MissingInput(LookupError):
    """An input of the night is missing (features, scores, champion, reference): nothing was measured."""


@dataclass(frozen=True)
class ScoredDay:
    """One day's features with the score of the model version that scored it."""

    ds: dt.date
    frame: pd.DataFrame  # FEATURE_COLUMNS + score
    model_name: str
    model_version: int
    model_run_id: str
    threshold: float
    features_uri: str
    scores_uri: str


def _check_schema(schema: str) -> None:
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain identifier")


def day_frame(lake_root: str, ds: dt.date) -> ScoredDay:
    """The committed features of ``ds`` joined with its committed champion scores (one model version)."""
    lake = Lake(lake_root)
    features_uri = lake.partition(tables.FEATURES, ds)
    if features_uri is None:
        raise MissingInput(
            f"no published features for ds={ds} in {lake_root}: run (or fix) feature_pipeline for that day, "
            "then clear this run"
        )
    scores_uri = lake.partition(tables.SCORES, ds)
    if scores_uri is None:
        raise MissingInput(
            f"no published scores for ds={ds}: batch_score has not scored the day (no champion yet?); "
            "score it, then clear this run"
        )
    features = lake.arrow_dataset(features_uri).to_table(columns=list(FEATURE_COLUMNS)).to_pandas()
    scores = lake.arrow_dataset(scores_uri).to_table(columns=list(SCORE_COLUMNS)).to_pandas()
    if scores.empty:
        raise MissingInput(f"the scores partition of ds={ds} ({scores_uri}) is empty: nothing to test")
    versions = scores["model_version"].unique()
    if len(versions) != 1:  # batch_score pins one version per day; anything else is a corrupt partition
        raise ValueError(f"scores of ds={ds} come from several model versions {sorted(versions)}; re-score the day")
    frame = features.merge(scores[["transaction_id", SCORE_COLUMN]], on="transaction_id", how="left")
    first = scores.iloc[0]
    return ScoredDay(
        ds=ds,
        frame=frame,
        model_name=str(first["model_name"]),
        model_version=int(first["model_version"]),
        model_run_id=str(first["model_run_id"]),
        threshold=float(first["threshold"]),
        features_uri=features_uri,
        scores_uri=scores_uri,
    )


def workdir() -> tempfile.TemporaryDirectory:
    """A scratch folder for artifacts of one task."""
    return tempfile.TemporaryDirectory(prefix="loopline-drift-")
