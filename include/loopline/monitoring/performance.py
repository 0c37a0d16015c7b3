"""Realized performance: the day whose labels matured scored against the labels reported up to ``ds``, overall
and per ``gate.slices`` group, upserted into ``model_performance`` and its slices table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from loopline import lake as tables
from loopline.drift import SCORE_COLUMN
from loopline.lake import Lake
from loopline.monitoring.inputs import SCORE_COLUMNS, _check_schema


def _labelled_scores(lake: Lake, scored_day: dt.date, asof: dt.date) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The day's scores and those of them labelled by the end of ``asof`` (with ``transaction_id``)."""
    scores_uri = lake.partition(tables.SCORES, scored_day)
    if scores_uri is None:
        return None
    scores = lake.arrow_dataset(scores_uri).to_table(columns=list(SCORE_COLUMNS)).to_pandas()
    labels = matured_labels(lake, scored_day, asof)
    rows = scores.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id", how="inner")
    return scores, rows


def matured_labels(lake: Lake, scored_day: dt.date, asof: dt.date) -> pd.DataFrame:
    """Labels of ``scored_day``'s transactions reported by the end of ``asof``: ``transaction_id, is_fraud``
    (a transaction with several reports takes the latest: a corrected verdict replaces the first)."""
    parts = []
    for day in tables.day_range(scored_day, asof):
        uri = lake.partition(tables.LABELED_TRANSACTIONS, day)
        if uri is not None:
            parts.append(
                lake.arrow_dataset(uri).to_table(columns=["transaction_id", "is_fraud", "reported_at"]).to_pandas()
            )
    labels = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["transaction_id", "is_fraud"])
    if parts:
        reported = pd.to_datetime(labels["reported_at"], utc=True)
        labels = labels[reported < pd.Timestamp(asof + dt.timedelta(days=1), tz="UTC")]
        labels = labels.dropna(subset=["is_fraud"]).sort_values(["transaction_id", "reported_at"], kind="mergesort")
        labels = labels.drop_duplicates("transaction_id", keep="last")
    return labels[["transaction_id", "is_fraud"]].reset_index(drop=True)


def realized_day(lake_root: str, scored_day: dt.date, asof: dt.date) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Scores of ``scored_day`` with the labels reported before the end of ``asof`` (None: no scores).

    Returns the labelled rows (``score``, ``is_fraud``) and facts about them: model, threshold, unlabelled rows.
    A transaction with several reports takes the latest (a corrected verdict replaces the first).
    """
    found = _labelled_scores(Lake(lake_root), scored_day, asof)
    if found is None:
        return None
    scores, rows = found
    first = scores.iloc[0] if len(scores) else None
    facts = {
        "ds": scored_day,
        "evaluated_on": asof,
        "scored_rows": len(scores),
        "unlabelled_rows": len(scores) - len(rows),
        "model_name": None if first is None else str(first["model_name"]),
        "model_version": None if first is None else int(first["model_version"]),
        "model_run_id": None if first is None else str(first["model_run_id"]),
        "threshold": None if first is None else float(first["threshold"]),
    }
    return rows[[SCORE_COLUMN, "is_fraud"]].reset_index(drop=True), facts


def realized_slices(lake_root: str, scored_day: dt.date, asof: dt.date, slicing: Any) -> dict[str, Any] | None:
    """The gate's slices (``gate.slices``) on the day's matured labels: per slice and group, the realized ROC AUC,
    PR AUC, recall and false-positive rate at the threshold the day was scored with (None: no scores, no labelled
    rows, no slices or no features partition to slice by)."""
    from loopline.slices import evaluate_slices

    lake = Lake(lake_root)
    found = _labelled_scores(lake, scored_day, asof)
    features_uri = lake.partition(tables.FEATURES, scored_day)
    if found is None or features_uri is None or not slicing.by:
        return None
    _, rows = found
    if rows.empty:
        return None
    columns = sorted({spec.column for spec in slicing.by} | {"transaction_id"})
    features = lake.arrow_dataset(features_uri).to_table(columns=columns).to_pandas()
    frame = rows.merge(features, on="transaction_id", how="inner")
    threshold = float(frame["threshold"].iloc[0])
    sliced = evaluate_slices(frame, frame["is_fraud"].to_numpy(), frame[SCORE_COLUMN].to_numpy(), threshold, slicing)
    return {"threshold": threshold, **sliced}


def write_performance_slices(conn: Any, schema: str, facts: Mapping[str, Any], sliced: Mapping[str, Any]) -> int:
    """Replace the ``model_performance_slices`` rows of ``(ds, model_version)``; returns the rows written."""
    _check_schema(schema)
    table = f"{schema}.model_performance_slices"
    count = 0
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"DELETE FROM {table} WHERE ds = %s AND model_version = %s",  # noqa: S608
                (facts["ds"], facts["model_version"]),
            )
            for name, groups in sliced["slices"].items():
                for group, m in groups.items():
                    cur.execute(
                        f"""INSERT INTO {table} (ds, model_name, model_version, evaluated_on, slice, grp, rows,
                        positives, threshold, roc_auc, pr_auc, recall_at_threshold, fpr_at_threshold, supported)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",  # noqa: S608
                        (
                            facts["ds"],
                            facts["model_name"],
                            facts["model_version"],
                            facts["evaluated_on"],
                            name,
                            group,
                            int(m["rows"]),
                            int(m["positives"]),
                            sliced["threshold"],
                            *(
                                _metric_or_null(m[k])
                                for k in ("roc_auc", "pr_auc", "recall_at_threshold", "fpr_at_threshold")
                            ),
                            bool(m["supported"]),
                        ),
                    )
                    count += 1
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return count


def _metric_or_null(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def write_performance(conn: Any, schema: str, row: Mapping[str, Any]) -> None:
    """Upsert the ``model_performance`` row of ``(ds, model_version)`` (a rerun replaces it)."""
    _check_schema(schema)
    columns = (
        "ds",
        "model_name",
        "model_version",
        "evaluated_on",
        "rows",
        "unlabelled_rows",
        "positives",
        "flagged",
        "threshold",
        "roc_auc",
        "pr_auc",
        "precision_at_threshold",
        "recall_at_threshold",
        "brier",
        "reference_roc_auc",
        "performance_drop",
        "note",
        "airflow_run_id",
    )
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in columns[3:])
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""INSERT INTO {schema}.model_performance ({", ".join(columns)}, computed_at)
                VALUES ({", ".join(["%s"] * len(columns))}, now())
                ON CONFLICT (ds, model_version) DO UPDATE SET {updates}, computed_at = now()""",  # noqa: S608
                tuple(row.get(name) for name in columns),
            )
        conn.commit()
    except Exception:
        conn.rollback()
        raise
