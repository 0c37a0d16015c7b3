"""The promotion path of the demo: the shadow's evidence, the approval answered as a person would, the
alias history after it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from loopline import stack
from loopline.config import LooplineConfig
from loopline.demo.plan import DemoPlan
from loopline.demo.runs import POLL_SECONDS, _api, backfill, dag_runs, wait_for_runs
from loopline.demo.summary import _client, _query, alias_model
from loopline.promotion import training_window


def wait_for_approval(env: dict[str, str], timeout: float = 600) -> dict | None:
    """The first promote_model approval waiting for an answer (None if none is asked within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = _api(env).pending_approvals("promote_model")
        if pending:
            return pending[0]
        runs = dag_runs("promote_model", env)
        if runs and all(r.get("state") in ("success", "failed") for r in runs):
            return None
        time.sleep(POLL_SECONDS)
    return None


def promotion_path(plan: DemoPlan, cfg: LooplineConfig, env: dict[str, str], echo: Callable[[str], None]) -> None:
    """After the drift nights: the scheduled retraining, the shadow's evidence night by night, the approval.

    The drift nights were replayed with the rest (``drift_monitor`` backfill): the pattern night scheduled its
    retraining for ``retrain_night`` and that night fired it; the retrained model passed the gate as shadow.
    Here the days after it are re-scored (the shadow next to the champion), the evidence nights replayed again
    (``compare_shadow`` judges on matured labels), and the promotion request is approved through the REST API.
    """
    schema = cfg.postgres.schema_
    for ds, kind, triggered, scheduled_for, reason in _query(
        f"SELECT ds, drift_kind, triggered, scheduled_for, reason FROM {schema}.retraining_decisions "  # noqa: S608
        "WHERE ds BETWEEN %s AND %s AND (drift_kind IS NOT NULL OR triggered) ORDER BY ds",
        (plan.drift_start, plan.retrain_night),
    ):
        what = "TRIGGERED" if triggered else f"scheduled for {scheduled_for}" if scheduled_for else "no trigger"
        echo(f"   night {ds}: {kind} drift, {what}: {reason[:200]}")
    for drift_ds, due_on, state, settled_by in _query(
        f"SELECT drift_ds, due_on, state, settled_by FROM {schema}.scheduled_retrainings ORDER BY drift_ds",  # noqa: S608
    ):
        echo(f"   scheduled retraining of {drift_ds}: due {due_on}, {state}{f' by {settled_by}' if settled_by else ''}")
    model = alias_model(cfg, "shadow")
    if model is None:
        echo("== no shadow after the retraining (the gate kept it as challenger, or nothing was retrained): done")
        return
    shadow = int(model.version)
    # Deployed on its cut-off (the morning after its retraining night): the shadow scores the days from then
    # on, none of which it was trained on, and compare_shadow judges those whose labels matured by yesterday.
    data_end, cutoff = training_window(_client(cfg), model)
    after = cutoff or plan.retrain_night + dt.timedelta(days=1)
    nights = plan.evidence_nights(after)
    trained = f"trained on data through {data_end}" if data_end else "its training run records no data window"
    if not nights:
        echo(f"== shadow v{shadow} ({trained}): none of the days from {after} has matured labels yet")
        return
    echo(f"== shadow v{shadow} ({trained}): scoring {after} .. {plan.end} beside the champion")
    _api(env).unpause("promote_model")
    backfill("batch_score", after, plan.end, env, echo)
    echo(f"== the shadow's evidence on matured labels, nights {nights[0]} .. {nights[-1]} (drift_monitor backfill)")
    backfill("drift_monitor", nights[0], nights[-1], env, echo)
    for ds, rows, positives, shadow_auc, champion_auc, diff, low, high in _query(
        "SELECT ds, rows, positives, shadow_roc_auc, champion_roc_auc, difference, ci_low, ci_high "  # noqa: S608
        f"FROM {schema}.shadow_evaluations WHERE slice = 'all' AND shadow_version = %s ORDER BY ds",
        (shadow,),
    ):
        echo(
            f"   day {ds}: {rows} paired rows, {positives} frauds: shadow {shadow_auc or float('nan'):.4f} vs "
            f"champion {champion_auc or float('nan'):.4f} ({diff or float('nan'):+.4f}, interval "
            f"[{low or float('nan'):+.4f}, {high or float('nan'):+.4f}])"
        )
    requests = _query(
        f"SELECT id, state FROM {schema}.promotion_requests WHERE version = %s",  # noqa: S608
        (shadow,),
    )
    if not requests:
        echo(
            f"   no promotion request: the evidence did not show a win yet (drift_monitor {nights[-1]}: "
            "compare_shadow's log)"
        )
        return
    echo(f"== promotion request #{requests[0][0]} for v{shadow}: waiting for promote_model to ask")
    detail = wait_for_approval(env)
    if detail is None:
        echo("   promote_model did not ask (see its check_request log)")
        return
    ti = detail["task_instance"]
    base = f"http://127.0.0.1:{stack.AIRFLOW_PORT}"
    echo(
        f"   approve in the UI: {base}/dags/promote_model/runs/{ti['dag_run_id']}/tasks/approve_promotion/"
        "required_actions"
    )
    echo("   (the demo approves it now through the REST API, as admin)")
    _api(env).answer(detail, "Approve")
    wait_for_runs("promote_model", lambda r: r.get("run_id") == ti["dag_run_id"], env, echo)
    for alias, action, version, approved_by, decision in _query(
        f"SELECT alias, action, version, approved_by, decision FROM {schema}.model_alias_history "  # noqa: S608
        "WHERE approved_by IS NOT NULL ORDER BY id DESC LIMIT 1",
    ):
        echo(f"   {alias} -> v{version} ({action}), approved by {approved_by}: {decision[:200]}")
