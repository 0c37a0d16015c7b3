"""promote_model: a person approves (or rejects) making the shadow champion, on the evidence of matured labels."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from loopline.config import get_config
from loopline.orchestration import promotion_tasks as t
from loopline.orchestration.defaults import DEFAULT_ARGS, tags
from loopline.orchestration.forms import promotion_params
from loopline.orchestration.links import ModelCardLink, attach

DOC = """
# promote_model

## What it does
Asks a person to approve one promotion request: the shadow model (`promotion.policy: shadow_first`: the
gate's winner, scored in shadow next to the champion) beat the champion on the same matured transactions
(`drift_monitor`'s `compare_shadow`: paired bootstrap interval of the ROC AUC difference, per slice, over at
least `promotion.min_days` days and `promotion.min_positives` frauds). `check_request` refuses a request that
is not open, whose version is no longer the shadow or whose files are gone or changed (the request is retired,
nobody is asked). `approve_promotion` waits in state *awaiting input* with the evidence and the model card
link in its body: answer it under **Required actions** in the UI (or `PATCH
/api/v2/dags/promote_model/dagRuns/<run>/taskInstances/approve_promotion/-1/hitlDetails`). Approve:
`promote_shadow` checks again and moves `champion`, with the approver, time and evidence in
`loopline.model_alias_history` and on the model card. Reject or no answer within
`promotion.approval_timeout_hours`: nothing is promoted and `settle_request` closes the request.

## Inputs
- Params: `request_id`, `version`, `reason` (set by `drift_monitor`'s `request_promotion`).
- Postgres: `loopline.promotion_requests` (the evidence); MLflow: aliases `shadow`, `champion`.

## Outputs
- MLflow: alias `champion` on the version (previous champion recorded for rollback), alias `shadow` removed.
- Postgres: `model_alias_history` rows (champion move with `approved_by`/`approved_at`; shadow removal),
  `promotion_requests.state` approved / rejected / timed_out / retired.

## Owner
loopline-data-platform (ML platform on-call); approvals: the model owner (`promotion.approvers`).

## Triage
- `check_request` failed: its log names the reason (request not open, version no longer the shadow, artifact
  gone); the request is retired. A new shadow gets its own request once it wins.
- `approve_promotion` failed: no answer in time (request `timed_out`): the shadow keeps its alias and keeps
  being judged; clear the run to ask again.
- Undo an approved promotion in one step: `loopline model rollback --reason "..."`.
"""

cfg = get_config()
approvers = [{"id": user, "name": user} for user in cfg.promotion.approvers] or None

with DAG(
    dag_id=t.PROMOTE_DAG_ID,
    description="Human-in-the-loop approval of a shadow that beat the champion on matured labels → champion",
    schedule=None,  # triggered by drift_monitor (one run per version) or by hand
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one alias decision at a time
    default_args=DEFAULT_ARGS,
    params=promotion_params(cfg),
    tags=tags("registry", "training"),
    doc_md=DOC,
) as dag:
    checked = attach(t.check_request(), ModelCardLink())
    approval = t.PromotionApproval(
        task_id=t.APPROVE_TASK_ID,
        subject="Promote " + cfg.mlflow.registered_model + " v{{ params.version }} to champion?",
        body="{{ ti.xcom_pull(task_ids='" + t.CHECK_TASK_ID + "')['body'] }}",
        response_timeout=timedelta(hours=cfg.promotion.approval_timeout_hours),
        assigned_users=approvers,
    )
    promoted = t.promote_shadow(approval.output)
    checked >> approval
    promoted >> t.settle_request()
