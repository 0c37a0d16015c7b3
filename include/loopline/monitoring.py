"""The nightly monitor's building blocks (no Airflow): inputs, cached detectors, reports, Postgres, decisions.

``drift_monitor`` runs these for one day ``ds``:

1. :func:`day_frame` joins the day's committed features with the champion's committed scores; the scores say
   which model version scored the day, and that version's reference sample is what the day is tested against.
2. :func:`cached_detector` fits a detector once per model version (and per drift settings) from the model
   run's ``reference_sample.parquet`` and keeps it as an MLflow artifact of that run
   (``drift_detector/<settings key>/``); later nights download it instead of refitting.
3. :func:`render_report` draws the most drifted features (reference vs current) and the p-values into an
   HTML page with PNGs; :func:`log_report` keeps them in one MLflow run per day (experiment
   ``drift.experiment``), reused by reruns.
4. :func:`write_drift` replaces the day in ``drift_runs`` / ``drift_reports`` in one transaction.
5. :func:`realized_day` scores the day whose labels matured (``ds - features.label_maturity_days``) against
   the labels reported up to ``ds``; :func:`write_performance` upserts ``model_performance``.
6. :func:`decide_and_record` wraps :func:`loopline.drift.retrain_decision` with the durable history of
   ``retraining_decisions``, atomically per model (advisory lock): the cooldown counts in confirmed triggers
   of nights (logical dates), so a backfill replaying a month of nights triggers as those nights would have,
   and a rerun of a night never triggers twice. A trigger is recorded ``pending`` and becomes ``confirmed``
   (:func:`confirm_trigger`) once the ``train_model`` run exists; a failed trigger stays pending and a rerun
   of the night triggers again.

Missing inputs raise :class:`MissingInput` with what to do: the DAG ends the night with that message and
never reports drift it did not measure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopline import lake as tables
from loopline.db import _IDENTIFIER
from loopline.drift import (
    SCORE_COLUMN,
    Decision,
    DetectorSettings,
    DriftResult,
    feature_horizons,
    retrain_decision,
    warming_features,
)
from loopline.lake import Lake
from loopline.schemas import CATEGORICAL_FEATURES, FEATURE_COLUMNS

if TYPE_CHECKING:
    from loopline.config import DriftConfig, LooplineConfig
    from loopline.drift import DriftDetector

__all__ = [
    "DETECTOR_ARTIFACT",
    "REFERENCE_ARTIFACT",
    "MissingInput",
    "ScoredDay",
    "cached_detector",
    "confirm_trigger",
    "day_frame",
    "decide_and_record",
    "detector_key",
    "log_report",
    "notification",
    "realized_day",
    "render_report",
    "warming",
    "write_drift",
    "write_performance",
]

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


# ---------------------------------------------------------------------------------------------------------
# Inputs


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


# ---------------------------------------------------------------------------------------------------------
# Detectors, built once per model version


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


# ---------------------------------------------------------------------------------------------------------
# Reports


def _ranked(result: DriftResult) -> list:
    tests = [row for row in result.tests if row.test in ("ks", "chi2", "score_ks")]
    return sorted(tests, key=lambda row: (row.p_value, -row.statistic))


def render_report(
    result: DriftResult, reference: pd.DataFrame, current: pd.DataFrame, out_dir: Path, *, title: str, top: int
) -> Path:
    """``report.html`` plus ``pvalues.png`` and ``feature_<name>.png`` for the ``top`` most drifted columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = _ranked(result)

    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(ranked))))
    names = [row.feature for row in ranked][::-1]
    p_values = [max(row.p_value, 1e-300) for row in ranked][::-1]
    colours = ["#c0392b" if row.drifted else "#7f8c8d" for row in ranked][::-1]
    ax.barh(names, [-math.log10(p) for p in p_values], color=colours)
    for row in ranked[:1]:
        ax.axvline(-math.log10(row.threshold), color="#2c3e50", linestyle="--", label="corrected level")
    ax.set_xlabel("-log10(p-value)  (red: drifted)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_dir / "pvalues.png", dpi=90)
    plt.close(fig)

    images = []
    for row in ranked[:top]:
        column = row.feature
        if column not in reference.columns or column not in current.columns:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        if column in CATEGORICAL_FEATURES:
            ref = reference[column].astype(str).value_counts(normalize=True)
            cur = current[column].astype(str).value_counts(normalize=True)
            frame = pd.DataFrame({"reference": ref, "current": cur}).fillna(0.0).sort_values("reference")
            frame.plot.barh(ax=ax, color=["#7f8c8d", "#c0392b"])
        else:
            ref = pd.to_numeric(reference[column], errors="coerce").dropna().to_numpy(dtype=float)
            cur = pd.to_numeric(current[column], errors="coerce").dropna().to_numpy(dtype=float)
            both = np.concatenate([ref, cur])
            if both.size == 0:
                plt.close(fig)
                continue
            low, high = np.quantile(both, [0.005, 0.995])
            bins = np.linspace(low, high if high > low else low + 1, 40)
            ax.hist(ref, bins=bins, density=True, alpha=0.55, label="reference", color="#7f8c8d")
            ax.hist(cur, bins=bins, density=True, alpha=0.55, label="current", color="#c0392b")
            ax.legend()
        ax.set_title(f"{column}: {row.test} p={row.p_value:.2e} ({'drifted' if row.drifted else 'stable'})")
        fig.tight_layout()
        name = f"feature_{column}.png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        images.append(name)

    rows = "\n".join(
        f"<tr class='{'drift' if row.drifted else ''}'><td>{html.escape(row.feature)}</td><td>{row.test}</td>"
        f"<td>{row.statistic:.4g}</td><td>{row.p_value:.3g}</td><td>{row.threshold:.3g}</td>"
        f"<td>{'' if math.isnan(row.effect) else f'{row.effect:+.4f}'}</td>"
        f"<td>{'yes' if row.drifted else 'no'}{'' if row.counted else ' (not counted)'}</td></tr>"
        for row in sorted(result.tests, key=lambda row: row.p_value)
    )
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:left}}
tr.drift{{background:#fadbd8}} .verdict{{font-size:1.3em}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="verdict"><b>{html.escape(result.summary())}</b></p>
<p>Backend {result.backend}; {result.reference_rows:,} reference rows, {result.current_rows:,} current rows;
level {result.p_value} with {result.correction} correction over the per-feature tests and over the segments.
Effect: KS distance, total variation distance of the category shares, or a segment's growth in share.</p>
<img src="pvalues.png" alt="p-values">
{"".join(f'<img src="{name}" alt="{name}">' for name in images)}
<table><tr><th>feature / segment</th><th>test</th><th>statistic</th><th>p-value</th><th>threshold</th><th>effect</th>
<th>drifted</th></tr>
{rows}</table></body></html>
"""
    path = out_dir / "report.html"
    path.write_text(body, encoding="utf-8")
    (out_dir / "drift_result.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return path


def log_report(client: Any, experiment_id: str, ds: dt.date, folder: Path, day: ScoredDay, result: DriftResult) -> str:
    """Log the report folder into the day's monitoring run (created once, reused by reruns); returns its id."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`loopline.kind` = 'drift' AND tags.`loopline.ds` = '{ds.isoformat()}'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(
            experiment_id,
            run_name=f"drift_monitor__{ds.isoformat()}",
            tags={"loopline.kind": "drift", "loopline.ds": ds.isoformat()},
        )
        run_id = run.info.run_id
    client.set_tag(run_id, "loopline.model_version", str(day.model_version))
    client.set_tag(run_id, "loopline.drift", str(result.drift).lower())
    client.set_tag(run_id, "loopline.summary", result.summary()[:5000])
    client.log_artifacts(run_id, str(folder), "report")
    from mlflow.entities import Metric

    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    metrics = {
        "signals": result.signals,
        "drifted_features": len(result.drifted_features),
        "drifted_segments": len(result.drifted_segments),
    }
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])
    client.set_terminated(run_id)
    return run_id


# ---------------------------------------------------------------------------------------------------------
# Postgres


def write_drift(
    conn: Any,
    schema: str,
    day: ScoredDay,
    result: DriftResult,
    *,
    report_uri: str | None,
    mlflow_run_id: str | None,
    airflow_run_id: str | None,
) -> int:
    """Replace the day in ``drift_runs`` and ``drift_reports`` in one transaction; returns the test rows written."""
    _check_schema(schema)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {schema}.drift_runs WHERE ds = %s", (day.ds,))  # noqa: S608 - validated
            cur.execute(
                f"""INSERT INTO {schema}.drift_runs
                (ds, model_name, model_version, backend, drift, signals, min_signals, drifted_features,
                 multivariate_drifted, score_drifted, reference_rows, current_rows, summary, report_uri,
                 mlflow_run_id, airflow_run_id, warming_features, drifted_segments)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",  # noqa: S608
                (
                    day.ds,
                    day.model_name,
                    day.model_version,
                    result.backend,
                    result.drift,
                    result.signals,
                    result.min_drifted_features,
                    list(result.drifted_features),
                    result.multivariate_drifted,
                    result.score_drifted,
                    result.reference_rows,
                    result.current_rows,
                    result.summary(),
                    report_uri,
                    mlflow_run_id,
                    airflow_run_id,
                    list(result.warming_features),
                    list(result.drifted_segments),
                ),
            )
            cur.executemany(
                f"""INSERT INTO {schema}.drift_reports
                (ds, feature, test, statistic, p_value, threshold, drifted, counted, effect, model_version)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",  # noqa: S608
                [
                    (
                        day.ds,
                        row.feature,
                        row.test,
                        _finite(row.statistic),
                        _finite(row.p_value),
                        row.threshold,
                        row.drifted,
                        row.counted,
                        _finite(row.effect),
                        day.model_version,
                    )
                    for row in result.tests
                ],
            )
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return len(result.tests)


def _finite(value: float) -> float | None:
    """NaN (a test that could not be computed) is stored as NULL; infinities as Postgres' Infinity."""
    return None if math.isnan(value) else float(value)


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


# ---------------------------------------------------------------------------------------------------------
# The decision, with its durable history


def _night(ds: dt.date) -> dt.datetime:
    """The end of the night ``ds`` (its data interval end): the cooldown's clock."""
    return dt.datetime.combine(ds + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


TRIGGER_PENDING = "pending"
TRIGGER_CONFIRMED = "confirmed"
# How long a pending trigger of another night of the same model counts as "a trigger in flight" (it suppresses
# this night's trigger); older pending rows are failed triggers waiting for a rerun and suppress nothing.
PENDING_LEASE = dt.timedelta(hours=1)
# Namespace (first key) of the per-model advisory lock. The two-key form lives in its own key space in pg_locks,
# so it cannot collide with single-key locks such as the migrations' (loopline.db).
_DECISION_LOCK_CLASS = 0x4C4C


def _lock_model(cur: Any, model_name: str) -> None:
    """Serialize the check-and-record of one model's retraining decisions until the transaction ends."""
    cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_DECISION_LOCK_CLASS, model_name))


def decide_and_record(
    conn: Any,
    schema: str,
    *,
    ds: dt.date,
    model_name: str,
    model_version: int | None,
    result: DriftResult | None,
    performance_drop: bool,
    cooldown_hours: float,
    training_active: bool,
    train_run_id: str,
    airflow_run_id: str | None,
    triggered_run_exists: bool = False,
    pending_lease: dt.timedelta = PENDING_LEASE,
    dry_run: bool = False,
    label_maturity_days: int | None = None,
) -> tuple[Decision, bool]:
    """Decide the night and record it, atomically per model; returns ``(decision, already_triggered)``.

    Runs in one transaction holding ``pg_advisory_xact_lock(<class>, hashtext(model_name))``, so two runs for
    the same model (a backfill may ignore ``max_active_runs``) decide one after the other: the second sees the
    first's row. A wanted trigger is recorded as ``pending`` (``triggered`` false) with ``train_run_id``;
    :func:`confirm_trigger` marks it ``confirmed`` once the run exists.

    - This night already ``confirmed``: no new trigger (``already_triggered`` True).
    - This night ``pending`` and ``triggered_run_exists`` (an earlier try's trigger worked, its confirmation
      did not): confirmed now, no new trigger (``already_triggered`` True).
    - This night ``pending`` otherwise: a failed trigger; decided again as if new, so a rerun triggers again.
    - Cooldown: counts only *confirmed* triggers of other nights (in nights, see :func:`_night`).
    - A ``pending`` trigger of another night of the model decided less than ``pending_lease`` ago is a trigger
      in flight: this night does not trigger too.
    - ``dry_run`` (the trigger form's dry run): the decision is recorded with its reason prefixed ``dry run:``
      and never as a trigger, so it neither triggers nor starts a cooldown.
    - ``label_maturity_days`` (``promotion.retrain_at_label_maturity``): a grown segment (a pattern) does not
      trigger now; a retraining is scheduled in ``scheduled_retrainings`` for ``ds + label_maturity_days``, and
      scheduled retrainings due by ``ds`` trigger tonight (cooldown and running trainings permitting; until
      then they stay pending). None: every drift triggers now, as before.
    """
    from loopline import promotion

    _check_schema(schema)
    try:
        with conn.cursor() as cur:
            _lock_model(cur, model_name)
            cur.execute(
                f"""SELECT trigger_state, reason, drifted_features FROM {schema}.retraining_decisions
                WHERE ds = %s""",  # noqa: S608 - validated identifier
                (ds,),
            )
            existing = cur.fetchone()
            state = existing[0] if existing is not None else None
            if state == TRIGGER_PENDING and triggered_run_exists:
                _confirm(cur, schema, ds, train_run_id)
                state = TRIGGER_CONFIRMED
            if state == TRIGGER_CONFIRMED:
                conn.commit()
                reason = f"already triggered for this night: {existing[1]}"
                return Decision(False, reason, list(existing[2] or [])), True
            cur.execute(
                f"""SELECT max(ds) FROM {schema}.retraining_decisions
                WHERE trigger_state = %s AND model_name = %s AND ds <> %s""",  # noqa: S608
                (TRIGGER_CONFIRMED, model_name, ds),
            )
            last = cur.fetchone()[0]
            cur.execute(
                f"""SELECT ds, decided_at FROM {schema}.retraining_decisions
                WHERE trigger_state = %s AND model_name = %s AND ds <> %s AND decided_at > now() - %s
                ORDER BY decided_at DESC LIMIT 1""",  # noqa: S608
                (TRIGGER_PENDING, model_name, ds, pending_lease),
            )
            in_flight = cur.fetchone()
            last_at = _night(last) if last is not None else None
            defer = label_maturity_days is not None
            due = (
                [d.isoformat() for d in promotion.due_retrainings(cur, schema, model_name=model_name, ds=ds)]
                if defer
                else []
            )
            due_on = ds + dt.timedelta(days=label_maturity_days) if defer else None
            note = (
                f"for {due_on.isoformat()}, when this night's labels have matured ({label_maturity_days} days)"
                if defer
                else ""
            )
            decision = retrain_decision(
                result,
                performance_drop,
                last_at,
                _night(ds),
                cooldown_hours,
                training_active,
                defer_pattern=defer,
                due=due,
                maturity_note=note,
            )
            if decision.trigger and in_flight is not None:
                decision = Decision(
                    False,
                    f"suppressed (the trigger of night {in_flight[0].isoformat()} is pending since "
                    f"{in_flight[1].isoformat()}: one retraining at a time); would trigger for {decision.reason}",
                    decision.drifted_features,
                    decision.kind,
                    decision.schedule,
                )
            if dry_run:
                verdict = "would trigger" if decision.trigger else "would not trigger"
                decision = Decision(
                    False, f"dry run: {verdict}: {decision.reason}", decision.drifted_features, decision.kind
                )
            scheduled_for = due_on if decision.schedule else None
            if scheduled_for is not None:
                promotion.schedule_retraining(
                    cur, schema, model_name=model_name, drift_ds=ds, due_on=scheduled_for, reason=decision.reason
                )
            cur.execute(
                f"""INSERT INTO {schema}.retraining_decisions
                (ds, model_name, model_version, triggered, reason, drifted_features, train_run_id, airflow_run_id,
                 trigger_state, triggered_run_id, confirmed_at, drift_kind, scheduled_for)
                VALUES (%s, %s, %s, false, %s, %s, %s, %s, %s, NULL, NULL, %s, %s)
                ON CONFLICT (ds) DO UPDATE SET model_name = EXCLUDED.model_name,
                  model_version = EXCLUDED.model_version, triggered = false,
                  reason = EXCLUDED.reason, drifted_features = EXCLUDED.drifted_features,
                  train_run_id = EXCLUDED.train_run_id, airflow_run_id = EXCLUDED.airflow_run_id,
                  trigger_state = EXCLUDED.trigger_state, triggered_run_id = NULL, confirmed_at = NULL,
                  drift_kind = EXCLUDED.drift_kind, scheduled_for = EXCLUDED.scheduled_for,
                  decided_at = now()""",  # noqa: S608
                (
                    ds,
                    model_name,
                    model_version,
                    decision.reason,
                    list(decision.drifted_features),
                    train_run_id if decision.trigger else None,
                    airflow_run_id,
                    TRIGGER_PENDING if decision.trigger else None,
                    decision.kind,
                    scheduled_for,
                ),
            )
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return decision, False


def _confirm(cur: Any, schema: str, ds: dt.date, triggered_run_id: str) -> bool:
    from loopline import promotion

    cur.execute(
        f"""UPDATE {schema}.retraining_decisions
        SET trigger_state = %s, triggered = true, triggered_run_id = %s, confirmed_at = coalesce(confirmed_at, now())
        WHERE ds = %s AND trigger_state IN (%s, %s) RETURNING model_name""",  # noqa: S608 - validated identifier
        (TRIGGER_CONFIRMED, triggered_run_id, ds, TRIGGER_PENDING, TRIGGER_CONFIRMED),
    )
    rows = cur.fetchall()
    for (model_name,) in rows:
        # The training's cut-off (ds + 1) holds every scheduled retraining's labels due by ds: they are covered.
        promotion.settle_covered(cur, schema, model_name=model_name, ds=ds, train_run_id=triggered_run_id)
    return len(rows) == 1


def confirm_trigger(conn: Any, schema: str, *, ds: dt.date, triggered_run_id: str) -> bool:
    """Mark the night's pending trigger ``confirmed`` (call only once the run ``triggered_run_id`` exists).

    Idempotent (a confirmed night stays confirmed, its first ``confirmed_at`` kept). Returns False when the night
    has no trigger to confirm (no row, or a rerun decided not to trigger after all).
    """
    _check_schema(schema)
    try:
        with conn.cursor() as cur:
            confirmed = _confirm(cur, schema, ds, triggered_run_id)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return confirmed


def notification(ds: str, drift: Mapping[str, Any] | None, decision: Mapping[str, Any] | None) -> dict[str, Any]:
    """The message a notifier sends for a night: Slack-compatible ``text`` plus the structured facts."""
    lines = [f"Loopline drift_monitor {ds}:"]
    if drift is None:
        lines.append("drift not measured (an input was missing; see the detect_drift log)")
    else:
        lines.append(f"model v{drift.get('model_version')}: {drift.get('summary')}")
        if drift.get("mlflow_run_url"):
            lines.append(f"report: {drift['mlflow_run_url']}")
    if decision is not None:
        verb = "TRIGGERED train_model" if decision.get("trigger") else "no retraining now"
        lines.append(f"{verb}: {decision.get('reason')}")
        if decision.get("scheduled_for"):
            lines.append(
                f"{decision.get('kind')} drift: retraining scheduled for {decision['scheduled_for']} (when this "
                "night's labels have matured; loopline.scheduled_retrainings)"
            )
        if decision.get("train_run_id"):
            lines.append(f"train_model run: {decision['train_run_id']}")
    return {
        "text": "\n".join(lines),
        "ds": ds,
        "drift": None if drift is None else bool(drift.get("drift")),
        "triggered": None if decision is None else bool(decision.get("trigger")),
        "drift_summary": None if drift is None else drift.get("summary"),
        "decision": None if decision is None else dict(decision),
    }


def decision_dict(decision: Decision, **extra: Any) -> dict[str, Any]:
    """A JSON-safe dict of a :class:`Decision` (for XCom)."""
    return {**asdict(decision), **extra}


def workdir() -> tempfile.TemporaryDirectory:
    """A scratch folder for artifacts of one task."""
    return tempfile.TemporaryDirectory(prefix="loopline-drift-")
