"""Promotion on evidence: retraining timed to label maturity, the shadow judged on matured labels, approval.

Three pieces, none of which knows Airflow:

* **Scheduled retrainings.** A pattern drift (a traffic segment grew, the realized performance fell) is learnt
  only from its labels, which mature ``features.label_maturity_days`` after the night. drift_monitor records a
  retraining due on ``ds + label_maturity_days`` (:func:`schedule_retraining`) and fires it on that night
  (:func:`due_retrainings`). A confirmed retraining whose cut-off is past a pending row's due night covers it
  (:func:`settle_covered`): the row is settled ``fired`` with the run that covered it.
* **Shadow evidence.** Under ``promotion.policy: shadow_first`` the gate's winner gets alias ``shadow`` and is
  scored next to the champion. :func:`paired_rows` joins both models' scores of a day with the day's matured
  labels on ``transaction_id`` (the same transactions), :func:`paired_auc_difference` bootstraps the ROC AUC
  difference (``scipy.stats.bootstrap`` with ``paired=True``) and :func:`judge` says ``win``, ``lose`` or
  ``wait`` from the evidence pooled over the days seen so far (``inconclusive`` once
  ``promotion.max_shadow_days`` days brought no verdict).
* **Requests and approval.** A win raises one request per version (:func:`raise_request`); a person approves
  it in Airflow (the ``promote_model`` DAG) and :func:`promote_shadow` moves ``champion`` with the approver,
  the time and the evidence in ``model_alias_history``; a loss or an inconclusive shadow retires the shadow
  (:func:`retire_shadow`, also ``loopline model retire-shadow``), a rejection or a timeout the request
  (:func:`close_request`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline import registry
from loopline.evidence import paired_interval, roc_auc

log = logging.getLogger(__name__)

SHADOW = "shadow"
WIN, LOSE, WAIT, INCONCLUSIVE = "win", "lose", "wait", "inconclusive"
OPEN, APPROVED, REJECTED, TIMED_OUT, RETIRED = "open", "approved", "rejected", "timed_out", "retired"
OVERALL = "all"  # the ``slice`` of the whole day's rows in shadow_evaluations


class PromotionError(RuntimeError):
    """A promotion or request that must not happen (the message says why); nothing was promoted."""


def _table(schema: str, name: str) -> str:
    from loopline.db import _IDENTIFIER

    if not _IDENTIFIER.match(schema or ""):
        raise ValueError(f"schema {schema!r} is not a plain identifier")
    return f"{schema}.{name}"


# ---------------------------------------------------------------------------------------------------------
# Scheduled retrainings


def schedule_retraining(
    cur: Any, schema: str, *, model_name: str, drift_ds: dt.date, due_on: dt.date, reason: str
) -> int:
    """Record (idempotently per model and night) a retraining due on ``due_on``; returns its id.

    Runs on the caller's cursor, inside its transaction (drift_monitor's per-model decision lock).
    """
    table = _table(schema, "scheduled_retrainings")
    cur.execute(
        f"""INSERT INTO {table} (model_name, drift_ds, due_on, reason) VALUES (%s, %s, %s, %s)
        ON CONFLICT (model_name, drift_ds) DO UPDATE SET due_on = EXCLUDED.due_on, reason = EXCLUDED.reason
        RETURNING id""",  # noqa: S608 - validated identifier
        (model_name, drift_ds, due_on, reason),
    )
    return int(cur.fetchone()[0])


def due_retrainings(cur: Any, schema: str, *, model_name: str, ds: dt.date) -> list[dt.date]:
    """The drift nights of the model's pending retrainings due on or before ``ds`` (oldest first)."""
    cur.execute(
        f"""SELECT drift_ds FROM {_table(schema, "scheduled_retrainings")}
        WHERE model_name = %s AND state = 'pending' AND due_on <= %s ORDER BY drift_ds""",  # noqa: S608
        (model_name, ds),
    )
    return [row[0] for row in cur.fetchall()]


def settle_covered(cur: Any, schema: str, *, model_name: str, ds: dt.date, train_run_id: str) -> int:
    """A retraining of night ``ds`` (cut-off ``ds + 1``) was confirmed: every pending row due by ``ds`` has its
    matured labels in that training, so it is ``fired``, settled by ``train_run_id``. Returns the rows settled."""
    cur.execute(
        f"""UPDATE {_table(schema, "scheduled_retrainings")}
        SET state = 'fired', settled_at = now(), settled_by = %s,
            note = CASE WHEN due_on = %s THEN 'fired on its night' ELSE 'covered by a later retraining' END
        WHERE model_name = %s AND state = 'pending' AND due_on <= %s""",  # noqa: S608
        (train_run_id, ds, model_name, ds),
    )
    return cur.rowcount


def pending_retrainings(conn: Any, schema: str, model_name: str) -> list[dict[str, Any]]:
    """The model's pending scheduled retrainings (for logs, the demo and operators)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT drift_ds, due_on, reason FROM {_table(schema, "scheduled_retrainings")}
            WHERE model_name = %s AND state = 'pending' ORDER BY due_on""",  # noqa: S608
            (model_name,),
        )
        rows = cur.fetchall()
    conn.commit()
    return [{"drift_ds": d.isoformat(), "due_on": due.isoformat(), "reason": reason} for d, due, reason in rows]


# ---------------------------------------------------------------------------------------------------------
# Paired comparison


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


# ---------------------------------------------------------------------------------------------------------
# Requests, promotion, retirement


def raise_request(
    conn: Any,
    schema: str,
    *,
    model_name: str,
    version: int,
    champion_version: int | None,
    requested_on: dt.date,
    evidence: Mapping[str, Any],
    airflow_run_id: str | None = None,
) -> int:
    """Open the one promotion request of ``version``; returns its id.

    A second request for the same version raises :class:`PromotionError` naming the first and its state
    (a version is judged once: approved, rejected, timed out or retired, its request stays the record).
    """
    table = _table(schema, "promotion_requests")
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""INSERT INTO {table} (model_name, version, champion_version, requested_on, evidence, airflow_run_id)
                VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (model_name, version) DO NOTHING RETURNING id""",  # noqa: S608
                (model_name, version, champion_version, requested_on, json.dumps(evidence), airflow_run_id),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    f"SELECT id, state, requested_on FROM {table} WHERE model_name = %s AND version = %s",  # noqa: S608
                    (model_name, version),
                )
                existing = cur.fetchone()
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    if row is None:
        raise PromotionError(
            f"{model_name} v{version} already has promotion request #{existing[0]} ({existing[1]}, raised for "
            f"{existing[2]}): one request per version, nothing new raised"
        )
    return int(row[0])


def get_request(conn: Any, schema: str, request_id: int) -> dict[str, Any]:
    """The request as a dict; :class:`PromotionError` when there is none with that id."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT id, model_name, version, champion_version, state, requested_on, evidence, decided_by, note
            FROM {_table(schema, "promotion_requests")} WHERE id = %s""",  # noqa: S608
            (request_id,),
        )
        row = cur.fetchone()
    conn.commit()
    if row is None:
        raise PromotionError(f"no promotion request #{request_id}: nothing promoted")
    keys = (
        "id",
        "model_name",
        "version",
        "champion_version",
        "state",
        "requested_on",
        "evidence",
        "decided_by",
        "note",
    )
    out = dict(zip(keys, row, strict=True))
    out["requested_on"] = out["requested_on"].isoformat()
    return out


def close_request(conn: Any, schema: str, request_id: int, state: str, *, by: str, note: str) -> bool:
    """Settle an open request (``approved``, ``rejected``, ``timed_out``, ``retired``); False if not open."""
    if state not in (APPROVED, REJECTED, TIMED_OUT, RETIRED):
        raise ValueError(f"a request closes as approved, rejected, timed_out or retired, not {state!r}")
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""UPDATE {_table(schema, "promotion_requests")} SET state = %s, decided_at = now(), decided_by = %s,
                note = %s WHERE id = %s AND state = 'open'""",  # noqa: S608
                (state, by, note[:2000], request_id),
            )
            changed = cur.rowcount == 1
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return changed


def check_promotable(client: Any, request: Mapping[str, Any]) -> None:
    """Raise :class:`PromotionError` unless the request is open and its version is still the shadow."""
    name, version = request["model_name"], int(request["version"])
    if request["state"] != OPEN:
        raise PromotionError(
            f"promotion request #{request['id']} for {name} v{version} is {request['state']}, not open: "
            "nothing promoted"
        )
    shadow = registry._alias_version(client, name, SHADOW)
    if shadow is None or int(shadow.version) != version:
        now = f"v{shadow.version}" if shadow is not None else "no version"
        raise PromotionError(
            f"{name} v{version} is no longer the shadow ({SHADOW} is {now}): nothing promoted; the request is retired"
        )


def _verify_artifacts(client: Any, conn: Any, schema: str, name: str, version: int) -> None:
    from loopline import artifacts

    with tempfile.TemporaryDirectory(prefix="loopline-promote-") as tmp:
        try:
            artifacts.fetch(client, name, version, Path(tmp), conn=conn, schema=schema)
        except Exception as exc:
            raise PromotionError(
                f"the model artifact of {name} v{version} is missing or changed ({type(exc).__name__}: "
                f"{str(exc)[:300]}): nothing promoted; the request is retired, the champion keeps serving"
            ) from exc


def promote_shadow(
    client: Any,
    conn: Any,
    schema: str,
    request_id: int,
    *,
    approved_by: str,
    approved_at: str,
) -> registry.AliasMove:
    """Make the request's shadow the champion, after a person approved it.

    Checks first (raising :class:`PromotionError`, nothing moved): the request is open, its version is still
    the shadow, and its files are there and match their recorded digests. Then ``champion`` moves (history row
    with the approver, the time and the evidence; pending, alias, applied), the ``shadow`` alias is removed
    (its own history row), and the request is closed ``approved``.
    """
    registry.reconcile(client, conn, schema, None)
    request = get_request(conn, schema, request_id)
    name, version = request["model_name"], int(request["version"])
    check_promotable(client, request)
    _verify_artifacts(client, conn, schema, name, version)
    champion = registry._alias_version(client, name, registry.CHAMPION)
    evidence = dict(request["evidence"] or {})
    target = client.get_model_version(name, str(version))
    decision = (
        f"promoted from shadow on approval by {approved_by}: "
        + (f"ROC AUC {evidence.get('difference', float('nan')):+.4f} over v{request['champion_version']} "
           f"on {evidence.get('rows')} paired rows, {evidence.get('days')} day(s)")
    )  # fmt: skip
    move = registry.AliasMove(
        model_name=name,
        alias=registry.CHAMPION,
        version=version,
        previous_version=int(champion.version) if champion is not None else None,
        run_id=target.run_id,
        triggered_by=f"promote_model (request #{request_id})",
        reason=f"shadow evidence, request #{request_id}",
        decision=decision,
        metrics={"shadow_evidence": evidence},
        approved_by=approved_by,
        approved_at=approved_at,
    )

    def apply() -> None:
        registry._apply(client, move)
        client.set_model_version_tag(name, str(version), "loopline.approved_by", approved_by)
        client.set_model_version_tag(name, str(version), "loopline.approved_at", approved_at)
        client.delete_registered_model_alias(name, SHADOW)

    registry.move_alias(client, move, apply, conn=conn, schema=schema)
    removal = registry.AliasMove(
        model_name=name,
        alias=SHADOW,
        version=version,
        previous_version=version,
        run_id=target.run_id,
        triggered_by=move.triggered_by,
        reason=move.reason,
        decision=f"shadow alias removed: v{version} is champion",
        action=registry.REMOVE,
    )
    registry.record_move(conn, schema, removal)
    close_request(conn, schema, request_id, APPROVED, by=approved_by, note=decision)
    _card(client, move, evidence, approved=True)
    return move


def retire_shadow(
    client: Any, conn: Any, schema: str, model_name: str, version: int, *, reason: str, triggered_by: str
) -> registry.AliasMove | None:
    """Remove the ``shadow`` alias from ``version`` (history row ``action = remove``); None when it is not
    the shadow any more (nothing to do). An open request of the version is retired with it."""
    shadow = registry._alias_version(client, model_name, SHADOW)
    if shadow is None or int(shadow.version) != int(version):
        return None
    move = registry.AliasMove(
        model_name=model_name,
        alias=SHADOW,
        version=int(version),
        previous_version=int(version),
        run_id=shadow.run_id,
        triggered_by=triggered_by,
        reason=reason,
        decision=f"shadow retired: {reason}"[:2000],
        action=registry.REMOVE,
    )

    def apply() -> None:
        client.delete_registered_model_alias(model_name, SHADOW)
        client.set_model_version_tag(model_name, str(version), "loopline.shadow", f"retired: {reason}"[:500])

    registry.move_alias(client, move, apply, conn=conn, schema=schema)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT id FROM {_table(schema, 'promotion_requests')} WHERE model_name = %s AND version = %s "  # noqa: S608
            "AND state = 'open'",
            (model_name, int(version)),
        )
        row = cur.fetchone()
    conn.commit()
    if row is not None:
        close_request(conn, schema, int(row[0]), RETIRED, by=triggered_by, note=reason)
    return move


def _card(client: Any, move: registry.AliasMove, evidence: Mapping[str, Any], *, approved: bool) -> None:
    """Re-render the version's model card with the promotion (best effort: the history row is the record)."""
    from loopline.model_card import log_card

    try:
        tags = client.get_model_version(move.model_name, str(move.version)).tags or {}
        try:
            gated = json.loads(tags.get("loopline.metrics") or "{}")  # the gate's metrics, when not truncated
        except ValueError:
            gated = {}
        log_card(
            client,
            model_name=move.model_name,
            version=move.version,
            run_id=move.run_id,
            gate={
                **gated,
                "alias": move.alias,
                "decision": move.decision,
                "promotion": {
                    "approved_by": move.approved_by,
                    "approved_at": move.approved_at,
                    "approved": approved,
                    "evidence": dict(evidence),
                },
            },
        )
    except Exception as exc:
        log.warning("could not update the model card of v%s: %s", move.version, exc)


def request_body(request: Mapping[str, Any], card_url: str) -> str:
    """The approval task's Markdown body: the evidence and the model card."""
    ev = request.get("evidence") or {}
    lines = [
        f"**{request['model_name']} v{request['version']}** (shadow) against champion "
        f"**v{request['champion_version']}**, on the same matured transactions of {ev.get('days')} day(s): "
        f"{ev.get('rows')} rows, {ev.get('positives')} frauds.",
        "",
        "| | ROC AUC |",
        "|---|---|",
        f"| shadow v{request['version']} | {_fmt(ev.get('shadow_auc'))} |",
        f"| champion v{request['champion_version']} | {_fmt(ev.get('champion_auc'))} |",
        f"| difference | {_fmt(ev.get('difference'), '+')} ({_fmt(ev.get('confidence'), '%')} paired bootstrap "
        f"interval [{_fmt(ev.get('ci_low'), '+')}, {_fmt(ev.get('ci_high'), '+')}]) |",
    ]
    supported = [
        (name, group, m)
        for name, groups in (ev.get("slices") or {}).items()
        for group, m in groups.items()
        if m.get("supported")
    ]
    if supported:
        lines += ["", "Supported slices (difference, interval):"]
        lines += [
            f"- {name}={group}: {_fmt(m.get('difference'), '+')} [{_fmt(m.get('ci_low'), '+')}, "
            f"{_fmt(m.get('ci_high'), '+')}]"
            for name, group, m in supported
        ]
    lines += ["", f"Model card: {card_url}", "", "Approve to make it champion; Reject to retire the request."]
    return "\n".join(lines)


def _fmt(value: Any, style: str = "") -> str:
    if value is None:
        return "n/a"
    if style == "%":
        return f"{float(value):.0%}"
    return f"{float(value):+.4f}" if style == "+" else f"{float(value):.4f}"


# ---------------------------------------------------------------------------------------------------------
# The night's comparison (drift_monitor's realized-performance step)


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
    from loopline.monitoring import matured_labels

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
    ``promotion.max_shadow_days`` compared days) retires the shadow.

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
    days = evaluated_days(conn, schema, name, shadow_version, champion_version)
    if not days:
        return {
            "outcome": WAIT,
            "reason": f"v{shadow_version} not compared yet: {why}",
            "version": shadow_version,
            "champion_version": champion_version,
            "scored_day": scored_day.isoformat(),
            "evaluated": False,
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
    evidence = {**verdict.evidence, "first_day": days[0].isoformat(), "last_day": days[-1].isoformat()}
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
