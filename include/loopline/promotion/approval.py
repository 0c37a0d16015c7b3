"""Promotion requests and what answers them: raise, read and close a request, promote the approved shadow,
retire a shadow, and the approval task's Markdown body.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loopline import registry
from loopline.promotion.states import APPROVED, OPEN, REJECTED, RETIRED, SHADOW, TIMED_OUT, PromotionError, _table

log = logging.getLogger(__name__)


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
    if "training_data_end" in ev:  # requests raised before the check was made do not say
        lines += [
            "",
            f"Scored days {ev.get('first_day')} .. {ev.get('last_day')}, "
            + (
                f"all after the shadow's training data (through {ev['training_data_end']})."
                if ev["training_data_end"]
                else "**not checked to be out of sample**: the shadow's training run records no data window."
            ),
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
