"""Tasks of the shadow's nightly judgement (in ``drift_monitor``) and of the ``promote_model`` DAG.

The logic is in :mod:`loopline.promotion`; these wrappers fetch connections, turn a refused promotion into a
failed task with its message (the request retired), and hand results over XCom.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from loopline.config import get_config
from loopline.orchestration.database import predictions_db

PROMOTE_DAG_ID = "promote_model"
COMPARE_TASK_ID = "compare_shadow"
REQUEST_TASK_ID = "request_promotion"
NO_REQUEST_TASK_ID = "skip_promotion_request"
CHECK_TASK_ID = "check_request"
APPROVE_TASK_ID = "approve_promotion"
PROMOTE_TASK_ID = "promote_shadow"
SETTLE_TASK_ID = "settle_request"
CONF_KEY = "promotion_conf"
ANSWER_KEY = "answer"
log = logging.getLogger(__name__)


class PromotionApproval(ApprovalOperator):
    """The standard provider's approval task, whose timeout is final: no answer in time fails it at once (its
    retries are for infrastructure; a retry would ask the person again)."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # The answer, also for a rejection (whose skip of the downstream tasks pushes no return value).
        if "error" not in event:
            responded = event.get("responded_at")
            context["ti"].xcom_push(
                key=ANSWER_KEY,
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "responded_by_user": dict(event.get("responded_by_user") or {}),
                    "responded_at": responded.isoformat() if hasattr(responded, "isoformat") else str(responded),
                },
            )
        return super().execute_complete(context, event)

    def process_trigger_event_error(self, event: dict[str, Any]) -> None:
        if event.get("error_type") == "timeout":
            raise AirflowFailException(f"no answer before the approval timed out: {event}")
        super().process_trigger_event_error(event)


def promote_run_id(version: Any) -> str:
    """One promote_model run per version: a rerun of the night never asks twice."""
    return f"promote_model__v{version}"


@task.branch(task_id=COMPARE_TASK_ID, trigger_rule="all_done")
def compare_shadow(ds: str | None = None, run_id: str | None = None, ti: Any = None) -> str:
    """Compare the shadow with the champion on the day whose labels matured tonight (same transactions), judge
    the evidence pooled over the days seen so far; a win raises a promotion request, a loss retires the shadow."""
    from loopline import promotion
    from loopline.config import resolve_uri
    from loopline.orchestration.mlflow_access import mlflow_client

    cfg = get_config()
    with predictions_db(cfg) as conn:
        result = promotion.judge_night(
            mlflow_client(cfg),
            conn,
            cfg.postgres.schema_,
            cfg,
            resolve_uri(cfg.storage.lake_uri),
            dt.date.fromisoformat(ds),
            airflow_run_id=run_id,
        )
    log.info("ds=%s shadow: %s: %s", ds, result["outcome"], result["reason"])
    _judgement_lineage(cfg, ds, result)
    ti.xcom_push(key="judgement", value=result)
    if result["outcome"] == promotion.WIN and result.get("request_id"):
        ti.xcom_push(
            key=CONF_KEY,
            value={
                "request_id": result["request_id"],
                "version": result["version"],
                "reason": f"drift_monitor {ds}: {result['reason']}"[:500],
            },
        )
        return REQUEST_TASK_ID
    return NO_REQUEST_TASK_ID


def _judgement_lineage(cfg: Any, ds: str, result: dict) -> None:
    """The night's comparison in OpenLineage: both models' scores of the matured day (and of every day the
    verdict pooled), the labels and the two model versions -> the day's ``shadow_evaluations``, and tonight's
    ``promotion_requests`` (a win raised one) or ``model_alias_history`` (a loss retired the shadow). Nothing
    compared or decided: nothing reported."""
    from loopline import lake as tables
    from loopline import lineage
    from loopline.orchestration.lineage import namespace, report_lineage

    if not result.get("scored_day"):
        return
    ns, name = namespace(), cfg.mlflow.registered_model
    scored_day = result["scored_day"]
    outputs = [lineage.analyst(ns, "shadow_evaluations", scored_day)] if result.get("evaluated") else []
    if result.get("request_id"):
        outputs.append(lineage.analyst(ns, "promotion_requests", ds))
    if result.get("retired"):
        outputs.append(lineage.analyst(ns, "model_alias_history", ds))
    days = sorted({scored_day, *(result.get("pooled_days") or [])})
    scores = [lineage.lake(ns, table, day) for day in days for table in (tables.SCORES, tables.SCORES_SHADOW)]
    # A compared day's labels are those reported from that day to tonight (monitoring.matured_labels).
    reported = tables.day_range(dt.date.fromisoformat(str(days[0])), dt.date.fromisoformat(str(ds)))
    labels = [lineage.lake(ns, tables.LABELED_TRANSACTIONS, day) for day in reported]
    report_lineage(
        [
            *scores,
            *labels,
            lineage.model_version(ns, name, result["version"]),
            lineage.model_version(ns, name, result["champion_version"]),
        ],
        outputs,
    )


def _settle_refused(conn: Any, schema: str, request_id: int, exc: Exception, by: str) -> None:
    from loopline import promotion

    promotion.close_request(conn, schema, request_id, promotion.RETIRED, by=by, note=str(exc))


@task(task_id=CHECK_TASK_ID)
def check_request(params: dict | None = None) -> dict:
    """The request must be open, its version still the shadow, its files there and unchanged: else the run
    fails here with the reason, the request is retired and nobody is asked."""
    from loopline import promotion
    from loopline.model_card import card_url
    from loopline.orchestration import links
    from loopline.orchestration.mlflow_access import mlflow_client

    cfg = get_config()
    schema = cfg.postgres.schema_
    request_id = params.get("request_id")
    if not request_id:
        raise AirflowFailException("no request_id in the run's conf: promote_model decides a promotion request")
    client = mlflow_client(cfg)
    with predictions_db(cfg) as conn:
        try:
            request = promotion.get_request(conn, schema, int(request_id))
            if params.get("version") and int(params["version"]) != int(request["version"]):
                raise promotion.PromotionError(
                    f"request #{request_id} promotes v{request['version']}, not v{params['version']}: nothing promoted"
                )
            promotion.check_promotable(client, request)
            promotion._verify_artifacts(client, conn, schema, request["model_name"], int(request["version"]))
        except promotion.PromotionError as exc:
            if "no promotion request" not in str(exc):
                _settle_refused(conn, schema, int(request_id), exc, "promote_model check")
            raise AirflowFailException(str(exc)) from exc
    run_id = client.get_model_version(request["model_name"], str(request["version"])).run_id
    url = card_url(cfg.mlflow.ui_url, run_id)
    links.record(links.CARD_KEY, url)
    return {**request, "card_url": url, "body": promotion.request_body(request, url)}


@task(task_id=PROMOTE_TASK_ID)
def promote_shadow(approval: dict, params: dict | None = None) -> dict:
    """Approved: make the shadow champion (checked again: still the shadow, files intact), with the approver,
    the time and the evidence in ``model_alias_history`` and on the model card."""
    from loopline import promotion
    from loopline.orchestration.mlflow_access import mlflow_client

    cfg = get_config()
    schema = cfg.postgres.schema_
    user = approval.get("responded_by_user") or {}
    approver = user.get("name") or user.get("id") or "unknown"
    responded = approval.get("responded_at")
    approved_at = responded.isoformat() if hasattr(responded, "isoformat") else str(responded)
    request_id = int(params["request_id"])
    with predictions_db(cfg) as conn:
        try:
            move = promotion.promote_shadow(
                mlflow_client(cfg), conn, schema, request_id, approved_by=approver, approved_at=approved_at
            )
        except promotion.PromotionError as exc:
            _settle_refused(conn, schema, request_id, exc, f"promote_model (approved by {approver})")
            raise AirflowFailException(str(exc)) from exc
        requested_on = promotion.get_request(conn, schema, request_id)["requested_on"]
    log.info(
        "v%s is champion (was v%s), approved by %s at %s", move.version, move.previous_version, approver, approved_at
    )
    from loopline import lineage
    from loopline.orchestration.lineage import namespace, report_lineage

    ns = namespace()
    # The request (raised on its night from that night's evidence) and the shadow version -> the alias history
    # of the day the champion moved (with the approver).
    report_lineage(
        [
            lineage.analyst(ns, "promotion_requests", requested_on),
            lineage.model_version(ns, move.model_name, move.version),
        ],
        [lineage.analyst(ns, "model_alias_history", move.moved_at[:10])],
    )
    return {"version": move.version, "previous_version": move.previous_version, "approved_by": approver}


@task(task_id=SETTLE_TASK_ID, trigger_rule="all_done")
def settle_request(params: dict | None = None, ti: Any = None) -> str:
    """Whatever happened, the request ends settled: rejected (by whom), timed out (no answer in
    ``promotion.approval_timeout_hours``), or left as the other tasks closed it (approved, retired)."""
    from loopline import promotion

    cfg = get_config()
    schema = cfg.postgres.schema_
    request_id = params.get("request_id")
    if not request_id:
        raise AirflowSkipException("no request to settle")
    answer = ti.xcom_pull(task_ids=APPROVE_TASK_ID, key=ANSWER_KEY) or {}
    chosen = (answer.get("chosen_options") or [None])[0]
    user = answer.get("responded_by_user") or {}
    with predictions_db(cfg) as conn:
        request = promotion.get_request(conn, schema, int(request_id))
        if request["state"] != promotion.OPEN:
            return request["state"]
        if chosen == "Reject":
            who = user.get("name") or user.get("id") or "unknown"
            promotion.close_request(
                conn, schema, int(request_id), promotion.REJECTED, by=who, note=f"rejected in Airflow by {who}"
            )
            return promotion.REJECTED
        if chosen is None:  # never answered (check_request and promote_shadow close what they refuse)
            promotion.close_request(
                conn,
                schema,
                int(request_id),
                promotion.TIMED_OUT,
                by="promote_model",
                note=f"no answer within {cfg.promotion.approval_timeout_hours:g} h (promotion.approval_timeout_hours)",
            )
            return promotion.TIMED_OUT
    return request["state"]
