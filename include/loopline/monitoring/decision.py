"""The retraining decision with its durable history (``retraining_decisions``), atomically per model, the
trigger's confirmation, and the night's notification.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from loopline.drift import Decision, DriftResult, retrain_decision
from loopline.monitoring.inputs import _check_schema


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
      scheduled retrainings due by ``ds`` trigger tonight (running trainings permitting, and the cooldown of the
      last trigger that fired scheduled ones: an immediate retraining's cooldown does not hold them; until then
      they stay pending). None: every drift triggers now, as before.
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
                f"""SELECT ds, triggered_run_id FROM {schema}.retraining_decisions
                WHERE trigger_state = %s AND model_name = %s AND ds <> %s ORDER BY ds DESC LIMIT 1""",  # noqa: S608
                (TRIGGER_CONFIRMED, model_name, ds),
            )
            latest = cur.fetchone()
            last = latest[0] if latest is not None else None
            if latest is not None and label_maturity_days is not None:
                # A rerun of an old night can schedule a row due before the last retraining: that one covered it.
                promotion.settle_covered(cur, schema, model_name=model_name, ds=latest[0], train_run_id=latest[1])
            # The last trigger that fired scheduled retrainings: only its cooldown holds the due ones.
            cur.execute(
                f"""SELECT max(d.ds) FROM {schema}.retraining_decisions d
                WHERE d.trigger_state = %s AND d.model_name = %s AND d.ds <> %s AND EXISTS (
                  SELECT 1 FROM {schema}.scheduled_retrainings s
                  WHERE s.model_name = d.model_name AND s.settled_by = d.triggered_run_id)""",  # noqa: S608
                (TRIGGER_CONFIRMED, model_name, ds),
            )
            last_due = cur.fetchone()[0]
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
                last_due_trigger_at=_night(last_due) if last_due is not None else None,
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
