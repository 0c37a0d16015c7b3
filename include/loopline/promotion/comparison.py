"""The paired comparison of the shadow with the champion on the same matured transactions, and the verdict.

:func:`paired_rows` joins both models' scores with the labels, :func:`paired_auc_difference` bootstraps the
ROC AUC difference, :func:`slice_differences` does it per ``gate.slices`` group, :func:`judge` is the rule
and :func:`write_evaluation` / :func:`evaluated_days` keep the per-day evidence in ``shadow_evaluations``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopline.evidence import paired_interval, roc_auc
from loopline.promotion.states import INCONCLUSIVE, LOSE, OVERALL, WAIT, WIN, _table


@dataclass(frozen=True)
class PairedDifference:
    """ROC AUC of the shadow and the champion on the same rows, their difference and its bootstrap interval."""

    rows: int
    positives: int
    shadow_auc: float
    champion_auc: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float


def paired_auc_difference(
    y_true: Sequence[int] | np.ndarray,
    shadow: Sequence[float] | np.ndarray,
    champion: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    samples: int = 1000,
    seed: int = 0,
) -> PairedDifference:
    """The shadow's ROC AUC minus the champion's on the same rows, with a paired bootstrap interval.

    Rows are resampled together (``scipy.stats.bootstrap(..., paired=True)``, percentile interval): each
    resample keeps a transaction's label and both its scores, so what varies is which transactions were seen,
    never the pairing. Without both classes the difference and interval are NaN.
    """
    y = np.asarray(y_true, dtype=int)
    a = np.asarray(shadow, dtype=float)
    b = np.asarray(champion, dtype=float)
    low, high = paired_interval(y, a, b, roc_auc, confidence=confidence, samples=samples, seed=seed)
    positives = int(y.sum())
    shadow_auc, champion_auc = roc_auc(y, a), roc_auc(y, b)
    difference = shadow_auc - champion_auc
    return PairedDifference(len(y), positives, shadow_auc, champion_auc, difference, low, high, confidence)


def paired_rows(champion_scores: pd.DataFrame, shadow_scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Transactions scored by both models with a matured label: ``transaction_id, is_fraud, champion, shadow``.

    Inner joins on ``transaction_id``: a transaction only one model scored, or still unlabelled, is left out, so
    both models are judged on exactly the same rows.
    """
    both = champion_scores[["transaction_id", "score"]].merge(
        shadow_scores[["transaction_id", "score"]], on="transaction_id", suffixes=("_champion", "_shadow")
    )
    rows = both.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id", how="inner")
    return rows.rename(columns={"score_champion": "champion", "score_shadow": "shadow"}).reset_index(drop=True)


@dataclass(frozen=True)
class Verdict:
    """What the evidence says: ``win`` (raise a request), ``lose`` (retire the shadow) or ``wait``."""

    outcome: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def slice_differences(
    frame: pd.DataFrame, slicing: Any, *, confidence: float, samples: int, seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per ``gate.slices`` slice and group of the paired rows (with the slice columns): the paired difference,
    and whether the group is supported (``min_rows`` rows and ``min_positives`` frauds)."""
    from loopline.slices import slice_groups

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in getattr(slicing, "by", None) or ():
        if spec.column not in frame.columns:
            continue
        groups = slice_groups(frame, spec.column, getattr(spec, "bands", None))
        out[spec.name] = {}
        for group in sorted(groups.dropna().unique(), key=str):
            part = frame[groups == group]
            positives = int(part["is_fraud"].sum())
            supported = len(part) >= slicing.min_rows and positives >= slicing.min_positives
            diff = paired_auc_difference(
                part["is_fraud"],
                part["shadow"],
                part["champion"],
                confidence=confidence,
                samples=samples if supported else 100,
                seed=seed,
            )
            out[spec.name][str(group)] = {**_finite_dict(asdict(diff)), "supported": bool(supported)}
    return out


def _finite_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}


def judge(
    overall: PairedDifference,
    days: int,
    slices: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    min_days: int,
    min_positives: int,
    min_improvement: float,
    slice_tolerance: float,
    max_days: int | None = None,
) -> Verdict:
    """The rule, as a pure function of the pooled paired evidence.

    - fewer than ``min_days`` matured days or ``min_positives`` labelled frauds: ``wait``;
    - the interval lies below zero (the shadow is worse), or a supported slice's interval lies below
      ``-slice_tolerance``: ``lose``;
    - the interval's lower bound is above ``min_improvement`` and no supported slice loses: ``win``;
    - otherwise ``wait`` (not enough evidence either way yet), or ``inconclusive`` once ``max_days`` days were
      compared without a verdict (the shadow is retired: it would hold its alias, and the scoring, forever).
    """
    verdict = _judge(
        overall, days, slices, min_days=min_days, min_positives=min_positives, min_improvement=min_improvement,
        slice_tolerance=slice_tolerance,
    )  # fmt: skip
    if verdict.outcome == WAIT and max_days is not None and days >= max_days:
        return Verdict(
            INCONCLUSIVE,
            f"inconclusive after {days} compared day(s) (promotion.max_shadow_days {max_days}): {verdict.reason}",
            verdict.evidence,
        )
    return verdict


def _judge(
    overall: PairedDifference,
    days: int,
    slices: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    min_days: int,
    min_positives: int,
    min_improvement: float,
    slice_tolerance: float,
) -> Verdict:
    evidence = {
        "days": days,
        **_finite_dict(asdict(overall)),
        "slices": {name: dict(groups) for name, groups in slices.items()},
    }
    if days < min_days or overall.positives < min_positives:
        return Verdict(
            WAIT,
            f"evidence still building: {days} of {min_days} day(s), {overall.positives} of {min_positives} "
            "labelled fraud(s) on the paired rows",
            evidence,
        )
    line = (
        f"ROC AUC shadow {overall.shadow_auc:.4f} vs champion {overall.champion_auc:.4f} "
        f"({overall.difference:+.4f}, {overall.confidence:.0%} interval [{overall.ci_low:+.4f}, "
        f"{overall.ci_high:+.4f}]) on {overall.rows} paired rows, {overall.positives} frauds, {days} day(s)"
    )
    losing = [
        f"{name}={group} ({m['difference']:+.4f}, interval up to {m['ci_high']:+.4f})"
        for name, groups in slices.items()
        for group, m in groups.items()
        if m.get("supported") and m.get("ci_high") is not None and m["ci_high"] < -slice_tolerance
    ]
    if np.isfinite(overall.ci_high) and overall.ci_high < 0:
        return Verdict(LOSE, f"the shadow loses: {line}", evidence)
    if losing:
        return Verdict(LOSE, f"the shadow loses slice(s) {', '.join(losing)}: {line}", evidence)
    if np.isfinite(overall.ci_low) and overall.ci_low > min_improvement:
        return Verdict(WIN, f"the shadow wins: {line}", evidence)
    return Verdict(WAIT, f"no verdict yet (the interval spans {min_improvement:+.4f}): {line}", evidence)


def write_evaluation(
    conn: Any,
    schema: str,
    *,
    ds: dt.date,
    evaluated_on: dt.date,
    model_name: str,
    shadow_version: int,
    champion_version: int,
    overall: PairedDifference,
    slices: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> int:
    """Replace the day's ``shadow_evaluations`` rows of the shadow version (a rerun rewrites them)."""
    table = _table(schema, "shadow_evaluations")
    rows = [(OVERALL, OVERALL, {**_finite_dict(asdict(overall)), "supported": True})]
    rows += [(name, group, m) for name, groups in slices.items() for group, m in groups.items()]
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"DELETE FROM {table} WHERE ds = %s AND model_name = %s AND shadow_version = %s",  # noqa: S608
                (ds, model_name, shadow_version),
            )
            for name, group, m in rows:
                cur.execute(
                    f"""INSERT INTO {table} (ds, model_name, shadow_version, champion_version, evaluated_on, slice,
                    grp, rows, positives, shadow_roc_auc, champion_roc_auc, difference, ci_low, ci_high, supported)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",  # noqa: S608
                    (
                        ds,
                        model_name,
                        shadow_version,
                        champion_version,
                        evaluated_on,
                        name,
                        group,
                        int(m["rows"]),
                        int(m["positives"]),
                        *(_num(m.get(k)) for k in ("shadow_auc", "champion_auc", "difference", "ci_low", "ci_high")),
                        bool(m["supported"]),
                    ),
                )
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return len(rows)


def _num(value: Any) -> float | None:
    return None if value is None or not np.isfinite(float(value)) else float(value)


def evaluated_days(
    conn: Any, schema: str, model_name: str, shadow_version: int, champion_version: int
) -> list[dt.date]:
    """The scored days already compared for this shadow against this champion (oldest first)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT DISTINCT ds FROM {_table(schema, "shadow_evaluations")}
            WHERE model_name = %s AND shadow_version = %s AND champion_version = %s ORDER BY ds""",  # noqa: S608
            (model_name, shadow_version, champion_version),
        )
        days = [row[0] for row in cur.fetchall()]
    conn.commit()
    return days
