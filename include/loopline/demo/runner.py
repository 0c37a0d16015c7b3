""":func:`run`: the whole demo, from bringing the stack up to the summary and where the UIs are."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

from loopline import lake as tables
from loopline import stack
from loopline.config import get_config, resolve_uri
from loopline.demo.approval import promotion_path
from loopline.demo.plan import SOURCE_SCHEMA, DemoPlan, source_environment, write_source_tables
from loopline.demo.runs import (
    _api,
    backfill,
    create_backfill,
    dag_runs,
    follow_backfill,
    range_backfill,
    replay_nights,
    run_states,
    trigger_and_wait,
    wait_for_dags,
    wait_for_run,
    wait_for_runs,
)
from loopline.demo.summary import (
    EXAMPLE_SQL,
    _auc_line,
    alert_summary,
    alias_model,
    champion,
    champion_summary,
    lake_summary,
    retraining_decisions,
    scored_auc,
)
from loopline.health import HEALTH_PREFIX


def run(plan: DemoPlan | None = None, echo: Callable[[str], None] = print) -> int:
    from loopline import synth

    plan = plan or DemoPlan()
    os.environ.update(plan.environment())
    get_config.cache_clear()
    os.environ.update(source_environment(plan, get_config()))
    get_config.cache_clear()
    cfg = get_config()
    started = time.monotonic()
    echo("== starting the local stack (train_model without its weekly schedule: the demo replays past nights)")
    if plan.promotion:
        echo(
            f"   promotion path: policy shadow_first, labels matured after {plan.maturity_days} days, "
            f"{plan.evidence_days} days of shadow evidence (a stack already running keeps its own settings)"
        )
    if plan.source != "landing":
        echo(
            f"   source {plan.source}: transactions and labels from tables of {SOURCE_SCHEMA} in the stack's "
            "database (a stack already running keeps its own sources: `loopline down` first)"
        )
    stack.up(cfg, echo=echo)
    env = stack.stack_environment(cfg, stack.embedded_pg())

    landing = Path(resolve_uri(cfg.storage.landing_uri))
    generated = landing if plan.source == "landing" else landing.parent / "source-export"
    echo(
        f"== generating {plan.days} days x {plan.transactions_per_day} transactions into {generated} "
        f"({plan.drift_kind} drift from {plan.drift_start})"
    )
    summary = synth.generate(
        plan.start,
        plan.days,
        generated,
        transactions_per_day=plan.transactions_per_day,
        seed=plan.seed,
        drift_start=plan.drift_start,
        drift_kind=plan.drift_kind,
    )
    echo(f"   {summary.transactions} transactions, {summary.frauds} fraud, {summary.labels} labels")
    if plan.source == "postgres":
        write_source_tables(cfg, generated, echo)

    echo("== waiting for the dag-processor to parse the DAGs")
    wait_for_dags(["feature_pipeline", "backfill_range", "batch_score", "train_model", "drift_monitor"], env)
    schedule = _api(env).dag("train_model").get("timetable_summary")
    if schedule:
        echo(
            f"   note: the running stack schedules train_model ({schedule}): started before the demo, it kept "
            "its settings; its scheduled run will compete with the demo's first champion (`make down` first "
            "to replay without it)"
        )
    # The whole history, yesterday included, in one range backfill; feature_pipeline stays paused meanwhile
    # (a scheduled day racing the range would find its history missing), then runs the days to come.
    before_end = plan.end - dt.timedelta(days=1)
    echo(f"== backfilling feature_pipeline's days {plan.start} .. {plan.end} in one range backfill (backfill_range)")
    feature_started = time.monotonic()
    if range_backfill(plan.start, plan.end, cfg, env, echo) != "success":
        echo("   the range backfill failed: see its task log and loopline.backfill_runs")
    _api(env).unpause("feature_pipeline")
    feature_minutes = (time.monotonic() - feature_started) / 60

    cutoff, window = plan.first_monitored, plan.first_window_days
    echo(
        f"== training the first champion with what was known on {cutoff}, on a {window}-day window "
        "(train_model, local runner)"
    )
    reason = f"demo: first champion, as of {cutoff}, {window}-day window"
    trigger_and_wait(
        "train_model",
        {"cutoff": str(cutoff), "window_days": window, "reason": reason, "triggered_by": "demo"},
        env,
        echo,
    )
    first = champion(cfg)
    monitored = tables.day_range(plan.first_monitored, plan.end)
    drifted = tables.day_range(plan.drift_start, plan.end)
    auc_before: dict = {}
    decisions: list[tuple] = []
    second = first
    if first is not None:
        # Unpaused: the scheduler scores yesterday once feature_pipeline has published it.
        _api(env).unpause("batch_score")
        echo(f"== scoring {plan.first_monitored} .. {plan.end} with champion v{first[1]} (batch_score backfill)")
        backfill("batch_score", plan.first_monitored, before_end, env, echo)
        wait_for_run("batch_score", plan.end, env, echo)
        auc_before = scored_auc(cfg, summary.truth, drifted)

        # Backfilled before unpausing, yesterday included: the scheduler then finds yesterday's night taken
        # and replays the nights in order, as they happened (the cooldown counts nights).
        echo(f"== drift_monitor nightly {plan.first_monitored} .. {plan.end} (drift from {plan.drift_start})")
        if plan.promotion:
            # Night by night, each night's retraining finished before the next night decides, as a day apart:
            # the retraining at label maturity must not find the immediate one still running.
            replay_nights(
                "drift_monitor",
                plan.first_monitored,
                plan.end,
                env,
                echo,
                lambda night: wait_for_runs("train_model", _triggered_by(night), env, echo),
            )
        else:
            create_backfill("drift_monitor", plan.first_monitored, plan.end, env)
            _api(env).unpause("drift_monitor")
            follow_backfill("drift_monitor", plan.first_monitored, plan.end, env, echo)
        echo("== waiting for the retraining drift_monitor triggered (train_model)")
        wait_for_runs("train_model", lambda r: str(r.get("run_id", "")).startswith("drift_monitor__"), env, echo)
        decisions = retraining_decisions(cfg, monitored)
        second = champion(cfg)
        if plan.promotion:
            promotion_path(plan, cfg, env, echo)
            second = champion(cfg)
        elif second is not None and second != first:
            echo(f"== re-scoring the drifted days {plan.drift_start} .. {plan.end} with champion v{second[1]}")
            backfill("batch_score", plan.drift_start, plan.end, env, echo)
        else:
            echo("== champion unchanged after the drift: nothing to re-score")

    total = (time.monotonic() - started) / 60
    echo("\n== summary")
    echo(f"whole demo {total:.1f} min (range backfill of {plan.days} days {feature_minutes:.1f} min)")
    dag_ids = ["backfill_range", "feature_pipeline", "train_model", "batch_score", "drift_monitor"]
    for dag_id, states in run_states(dag_ids, env).items():
        echo(f"{dag_id:>17} runs: {states}")
    # train_model runs: the demo's first champion and drift_monitor's triggers
    for r in sorted(dag_runs("train_model", env), key=lambda r: str(r.get("run_id"))):
        echo(f"{'train_model':>17}  {r.get('run_id')}: {r.get('state')}")
    for name, value in lake_summary(cfg, tables.day_range(plan.start, plan.end)).items():
        echo(f"{name:>26}: {value}")
    triggered = [d for d in decisions if d[1]]
    for ds, _, reason, train_run in triggered:
        echo(f"drift night {ds}: triggered train_model {train_run}: {reason[:300]}")
    if decisions and not triggered:
        echo(f"no retraining triggered over {len(decisions)} monitored nights: {decisions[-1][2][:300]}")
    suppressed = [d for d in decisions if not d[1] and "suppressed" in d[2]]
    if suppressed:
        echo(f"retraining suppressed on {len(suppressed)} later night(s) (cooldown or training running)")
    echo(f"first champion: v{first[1]}" if first else "first champion: none (train_model failed or the gate refused)")
    if second and second != first:
        how = "approved in promote_model" if plan.promotion else "promoted by the champion/challenger gate"
        echo(f"champion after the drift: v{second[1]} ({how})")
    elif first and plan.promotion and (shadow := alias_model(cfg, "shadow")) is not None:
        echo(f"champion after the drift: unchanged; v{shadow.version} is the shadow, not promoted (see above)")
    elif first and plan.promotion:
        echo(
            "champion after the drift: unchanged (no shadow waiting: the retrained challenger failed train_model's "
            "gate, or compare_shadow retired its shadow on the evidence: see loopline.shadow_evaluations)"
        )
    elif first:
        echo("champion after the drift: unchanged (the retrained challenger did not beat it: see train_model's gate)")
    echo(_auc_line(f"drifted days {plan.drift_start} .. {plan.end}, before re-scoring", auc_before))
    if second and second != first and plan.promotion:
        # The promoted shadow scored the days after its retraining beside the champion: compare on those days.
        shadow = scored_auc(cfg, summary.truth, drifted, table=tables.SCORES_SHADOW)
        shadow_days = shadow.get("days") or []
        if shadow_days:
            span = f"{shadow_days[0]} .. {shadow_days[-1]}"
            echo(_auc_line(f"days {span}, champion's scores", scored_auc(cfg, summary.truth, shadow_days)))
            echo(_auc_line(f"days {span}, the promoted shadow's scores", shadow))
    elif second and second != first:
        echo(_auc_line("drifted days, re-scored", scored_auc(cfg, summary.truth, drifted)))
    echo(champion_summary(cfg))
    echo("alert rate and precision of the scored days (loopline.daily_alerts):")
    for line in alert_summary(cfg):
        echo(f"  {line}")
    echo(f"\nAirflow UI: http://127.0.0.1:{stack.AIRFLOW_PORT}  (user admin, password {stack.admin_password()})")
    echo(f"MLflow UI:  {cfg.mlflow.ui_url}  {stack.mlflow_login_hint()}")
    echo(f"Lake:       {resolve_uri(cfg.storage.lake_uri)}   Reports: {resolve_uri(cfg.storage.reports_uri)}")
    echo(f"Lineage:    {resolve_uri(cfg.lineage.events_file)}  (OpenLineage events, one JSON object a line)")
    pg = stack.embedded_pg()
    example = EXAMPLE_SQL.format(day=plan.end, pg_host=pg.host, pg_port=pg.port, analyst=cfg.postgres.analyst_role)
    echo("Prediction tables (Postgres):\n" + example)
    echo(f"Model health: http://127.0.0.1:{stack.AIRFLOW_PORT}{HEALTH_PREFIX}/  (behind the Airflow login)")
    echo("The stack keeps running; `make down` stops it.")
    if plan.promotion:
        echo(f"Required actions (approvals): http://127.0.0.1:{stack.AIRFLOW_PORT}/required_actions")
    final = run_states(["backfill_range", "feature_pipeline", "batch_score", "drift_monitor"], env)
    return 0 if first is not None and not any(states.get("failed", 0) for states in final.values()) else 1


def _triggered_by(night: dt.date) -> Callable[[dict], bool]:
    """Selects the train_model run drift_monitor's night ``night`` triggered (its fixed run id)."""
    return lambda run: run.get("run_id") == f"drift_monitor__{night}"
