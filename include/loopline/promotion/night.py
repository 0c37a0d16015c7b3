"""The night's comparison (drift_monitor's realized-performance step): the day whose labels matured tonight is
compared, the evidence pooled over the days seen so far is judged, and the verdict acted on
(:func:`judge_night`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pandas as pd

from loopline import registry
from loopline.promotion.approval import raise_request, retire_shadow
from loopline.promotion.comparison import (
    evaluated_days,
    judge,
    paired_auc_difference,
    paired_rows,
    slice_differences,
    write_evaluation,
)
from loopline.promotion.states import INCONCLUSIVE, LOSE, SHADOW, WAIT, WIN, PromotionError


def paired_day(
    lake_root: str,
    scored_day: dt.date,
    asof: dt.date,
    *,
    shadow_version: int,
    champion_version: int,
    columns: Sequence[str] = (),
) -> tuple[pd.DataFrame | None, str]:
    """The day's paired rows (:func:`paired_rows`) plus the feature ``columns`` (slices), or None and why not.

    Only rows the named versions scored count: a day the champion or the shadow of another version scored is no
    evidence for this pair.
    """
    from loopline import lake as tables
    from loopline.lake import Lake
    from loopline.monitoring.performance import matured_labels

    lake = Lake(lake_root)
    wanted = ["transaction_id", "score", "model_version"]
    frames = {}
    for role, table, version in (
        ("champion", tables.SCORES, champion_version),
        ("shadow", tables.SCORES_SHADOW, shadow_version),
    ):
        uri = lake.partition(table, scored_day)
        if uri is None:
            return None, f"no {table} partition for ds={scored_day}"
        frame = lake.arrow_dataset(uri).to_table(columns=wanted).to_pandas()
        frame = frame[frame["model_version"].astype(int) == int(version)]
        if frame.empty:
            return None, f"ds={scored_day} was not scored by the {role} v{version}"
        frames[role] = frame
    rows = paired_rows(frames["champion"], frames["shadow"], matured_labels(lake, scored_day, asof))
    if rows.empty:
        return None, f"no matured labels for the transactions both models scored on ds={scored_day}"
    features_uri = lake.partition(tables.FEATURES, scored_day)
    if columns and features_uri is not None:
        wanted = sorted({*columns, "transaction_id"})
        features = lake.arrow_dataset(features_uri).to_table(columns=wanted).to_pandas()
        rows = rows.merge(features, on="transaction_id", how="left")
    return rows, ""


def training_window(client: Any, version: Any) -> tuple[dt.date | None, dt.date | None]:
    """``(data_end, cutoff)`` of a model version's training run: the last day whose rows it was trained on
    (validation and holdout included: ``fingerprint.mature_end``, else the day before the cut-off) and its
    ``loopline.cutoff`` (the morning after its training night: the first day it can be deployed on). None for
    what the run does not record (a model registered outside the trainer)."""
    run = client.get_run(version.run_id) if getattr(version, "run_id", None) else None
    if run is None:
        return None, None
    cutoff_tag = run.data.tags.get("loopline.cutoff")
    cutoff = dt.date.fromisoformat(cutoff_tag) if cutoff_tag else None
    mature_end = run.data.params.get("fingerprint.mature_end")
    if mature_end:
        return dt.date.fromisoformat(mature_end), cutoff
    return (cutoff - dt.timedelta(days=1) if cutoff else None), cutoff


def training_data_end(client: Any, version: Any) -> dt.date | None:
    """The last day whose rows the model version was trained on (:func:`training_window`), or None."""
    return training_window(client, version)[0]


def judge_night(
    client: Any,
    conn: Any,
    schema: str,
    cfg: Any,
    lake_root: str,
    ds: dt.date,
    *,
    airflow_run_id: str | None = None,
) -> dict[str, Any]:
    """Compare the shadow with the champion on the day whose labels matured tonight, then judge the pooled
    evidence and act: a win raises the version's promotion request, a loss (or no verdict after
    ``promotion.max_shadow_days`` compared days) retires the shadow. Only days after the shadow's training data
    (:func:`training_data_end`) are evidence: a day it was trained on is skipped and never pooled.

    Returns a JSON-safe dict: ``outcome`` (``win``, ``lose``, ``wait``, ``inconclusive`` or ``none``),
    ``reason``, and for a win the ``request_id`` and ``version`` (None when a request already existed); with a
    shadow also the ``scored_day`` compared tonight, whether it was ``evaluated`` (its rows written), the
    ``pooled_days`` the verdict read and whether the shadow was ``retired``. ``cfg`` is the Loopline config.
    """
    name = cfg.mlflow.registered_model
    shadow = registry._alias_version(client, name, SHADOW)
    champion = registry._alias_version(client, name, registry.CHAMPION)
    if shadow is None or champion is None:
        return {"outcome": "none", "reason": f"no {SHADOW} model to judge (promotion.policy {cfg.promotion.policy})"}
    shadow_version, champion_version = int(shadow.version), int(champion.version)
    policy, slicing = cfg.promotion, cfg.gate.slices
    scored_day = ds - dt.timedelta(days=cfg.features.label_maturity_days)
    columns = [spec.column for spec in slicing.by]

    def day_rows(day: dt.date) -> tuple[pd.DataFrame | None, str]:
        return paired_day(
            lake_root, day, ds, shadow_version=shadow_version, champion_version=champion_version, columns=columns
        )

    # Evidence is out of sample: a day the shadow was trained on (its rows and labels) would flatter it.
    data_end = training_data_end(client, shadow)
    in_sample = data_end is not None and scored_day <= data_end
    if in_sample:
        tonight, why = None, f"ds={scored_day} is inside v{shadow_version}'s training data (through {data_end})"
    else:
        tonight, why = day_rows(scored_day)
    evaluated = tonight is not None
    if tonight is not None:
        overall = paired_auc_difference(
            tonight["is_fraud"], tonight["shadow"], tonight["champion"],
            confidence=policy.confidence, samples=policy.bootstrap_samples,
        )  # fmt: skip
        sliced = slice_differences(tonight, slicing, confidence=policy.confidence, samples=policy.bootstrap_samples)
        write_evaluation(
            conn, schema, ds=scored_day, evaluated_on=ds, model_name=name, shadow_version=shadow_version,
            champion_version=champion_version, overall=overall, slices=sliced,
        )  # fmt: skip
    days = [
        day
        for day in evaluated_days(conn, schema, name, shadow_version, champion_version)
        if data_end is None or day > data_end
    ]
    if not days:
        return {
            "outcome": WAIT,
            "reason": f"v{shadow_version} not compared yet: {why}",
            "version": shadow_version,
            "champion_version": champion_version,
            "scored_day": scored_day.isoformat(),
            "evaluated": False,
            "training_data_end": data_end.isoformat() if data_end else None,
        }
    pooled = pd.concat([frame for frame, _ in map(day_rows, days) if frame is not None], ignore_index=True)
    overall = paired_auc_difference(
        pooled["is_fraud"], pooled["shadow"], pooled["champion"],
        confidence=policy.confidence, samples=policy.bootstrap_samples,
    )  # fmt: skip
    sliced = slice_differences(pooled, slicing, confidence=policy.confidence, samples=policy.bootstrap_samples)
    verdict = judge(
        overall, len(days), sliced, min_days=policy.min_days, min_positives=policy.min_positives,
        min_improvement=policy.min_improvement, slice_tolerance=slicing.tolerance, max_days=policy.max_shadow_days,
    )  # fmt: skip
    evidence = {
        **verdict.evidence,
        "first_day": days[0].isoformat(),
        "last_day": days[-1].isoformat(),
        # None: the version records no training window, so no day could be checked to be out of sample
        "training_data_end": data_end.isoformat() if data_end else None,
    }
    out: dict[str, Any] = {
        "outcome": verdict.outcome,
        "reason": f"v{shadow_version} vs champion v{champion_version}: {verdict.reason}",
        "version": shadow_version,
        "champion_version": champion_version,
        "evidence": evidence,
        "request_id": None,
        "scored_day": scored_day.isoformat(),
        "evaluated": evaluated,
        "pooled_days": [day.isoformat() for day in days],
        "retired": False,
        "training_data_end": evidence["training_data_end"],
    }
    if verdict.outcome == WIN:
        try:
            out["request_id"] = raise_request(
                conn, schema, model_name=name, version=shadow_version, champion_version=champion_version,
                requested_on=ds, evidence=evidence, airflow_run_id=airflow_run_id,
            )  # fmt: skip
        except PromotionError as exc:
            out["reason"] += f"; {exc}"
    elif verdict.outcome in (LOSE, INCONCLUSIVE):
        retired = retire_shadow(
            client, conn, schema, name, shadow_version, reason=verdict.reason[:1500],
            triggered_by=f"drift_monitor {ds}",
        )  # fmt: skip
        out["retired"] = retired is not None
    return out
