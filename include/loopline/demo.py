"""``loopline demo``: the loop on embedded defaults, through the real scheduler.

Brings the local stack up, generates landing drops with a drift near the end, backfills
``feature_pipeline`` with ``airflow backfill create`` while printing which runs are queued, running and
done, trains the first champion with ``train_model``, scores the last week with a ``batch_score`` backfill,
and ends with a summary of runs, rows at each stage, quarantined rows and where the UIs are.
The stack keeps running afterwards (``make down`` stops it).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loopline import lake as tables
from loopline import stack
from loopline.config import LooplineConfig, get_config, resolve_uri
from loopline.lake import Lake


def default_start(days: int = 60) -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)


@dataclass(frozen=True)
class DemoPlan:
    """History ends yesterday (UTC), so the scheduler's own daily run finds its drop too."""

    start: dt.date = field(default_factory=default_start)
    days: int = 60
    transactions_per_day: int = 5000
    drift_day: int = 50
    drift_kind: str = "covariate"
    backfill_days: int = 60
    score_days: int = 7  # batch_score backfills the last days of history with the first champion
    seed: int = 7

    @property
    def last_backfill_day(self) -> dt.date:
        # the last generated day (yesterday) is left to the scheduler's own daily run
        return self.start + dt.timedelta(days=min(self.days - 1, self.backfill_days) - 1)


def _airflow_json(args: list[str], env: dict[str, str]) -> list[dict]:
    result = stack.airflow_cli([*args, "-o", "json"], env, check=False)
    # The CLI logs to stdout too: the answer is the line holding the JSON list.
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("["):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return []


def wait_for_dag(dag_id: str, env: dict[str, str], timeout: float = 180) -> None:
    """Wait until the dag-processor has parsed ``dag_id`` (a backfill needs the serialized DAG)."""
    stack.airflow_cli(["dags", "reserialize"], env, check=False)
    stack.wait_until(
        lambda: any(d.get("dag_id") == dag_id for d in _airflow_json(["dags", "list"], env)),
        timeout,
        f"DAG {dag_id} to be parsed",
    )


def backfill(dag_id: str, start: dt.date, end: dt.date, env: dict[str, str], echo: Callable[[str], None]) -> dict:
    """Create a backfill and follow it until every run has finished; returns the final state counts."""
    created = stack.airflow_cli(
        [
            "backfill",
            "create",
            "--dag-id",
            dag_id,
            "--from-date",
            str(start),
            "--to-date",
            str(end),
            "--reprocess-behavior",
            "completed",
        ],
        env,
        check=False,
    )
    if created.returncode != 0:
        raise RuntimeError(f"airflow backfill create failed:\n{created.stdout[-2000:]}{created.stderr[-2000:]}")
    expected = (end - start).days + 1
    last = ""
    while True:
        runs = [
            r
            for r in _airflow_json(["dags", "list-runs", dag_id], env)
            if start <= dt.date.fromisoformat(str(r.get("logical_date"))[:10]) <= end
        ]
        states = Counter(r.get("state") for r in runs)
        line = f"{dag_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + f" (of {expected})"
        if line != last:
            echo(line)
            last = line
        finished = states.get("success", 0) + states.get("failed", 0)
        if len(runs) >= expected and finished >= expected:
            return dict(states)
        time.sleep(5)


def trigger_and_wait(dag_id: str, conf: dict, env: dict[str, str], echo: Callable[[str], None]) -> str:
    """Trigger one run of ``dag_id`` and follow it to the end; returns its final state."""
    stack.airflow_cli(["dags", "unpause", dag_id], env, check=False)
    run_id = f"demo__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    stack.airflow_cli(["dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf)], env)
    last = ""
    while True:
        runs = [r for r in _airflow_json(["dags", "list-runs", dag_id], env) if r.get("run_id") == run_id]
        state = runs[0].get("state") if runs else "queued"
        if state != last:
            echo(f"{dag_id} {run_id}: {state}")
            last = state
        if state in ("success", "failed"):
            return state
        time.sleep(5)


def champion_summary(cfg: LooplineConfig) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(resolve_uri(cfg.mlflow.tracking_uri))
    lines = []
    for alias in ("champion", "challenger"):
        try:
            version = client.get_model_version_by_alias(cfg.mlflow.registered_model, alias)
        except MlflowException:
            continue
        metrics = client.get_run(version.run_id).data.metrics
        roc, pr = (metrics.get(f"holdout_{name}", float("nan")) for name in ("roc_auc", "pr_auc"))
        name = cfg.mlflow.registered_model
        lines.append(f"{alias}: {name} v{version.version}, holdout ROC AUC {roc:.4f}, PR AUC {pr:.4f}")
    return "\n".join(lines) or "no registered model yet"


def lake_summary(cfg: LooplineConfig, days: list[dt.date]) -> dict[str, int]:
    """Rows at each stage of the lake over ``days`` (from the committed partitions' stats)."""
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    totals: Counter[str] = Counter()
    for day in days:
        totals["raw transactions"] += lake.stats(tables.RAW_TRANSACTIONS, day).get("rows", 0)
        totals["quarantined transactions"] += lake.stats(tables.QUARANTINE_TRANSACTIONS, day).get("rows", 0)
        totals["feature rows"] += lake.stats(tables.FEATURES, day).get("rows", 0)
        totals["days with features"] += int(lake.partition(tables.FEATURES, day) is not None)
        scored = lake.stats(tables.SCORES, day)
        totals["scored transactions"] += scored.get("rows", 0)
        totals["flagged transactions"] += scored.get("flagged", 0)
    return dict(totals)


def run(plan: DemoPlan | None = None, echo: Callable[[str], None] = print) -> int:
    from loopline import synth

    plan = plan or DemoPlan()
    cfg = get_config()
    echo("== starting the local stack")
    stack.up(cfg, echo=echo)
    env = stack.stack_environment(cfg, stack.embedded_pg_host())

    landing = Path(resolve_uri(cfg.storage.landing_uri))
    drift_start = plan.start + dt.timedelta(days=plan.drift_day)
    echo(
        f"== generating {plan.days} days x {plan.transactions_per_day} transactions into {landing} "
        f"({plan.drift_kind} drift from {drift_start})"
    )
    summary = synth.generate(
        plan.start,
        plan.days,
        landing,
        transactions_per_day=plan.transactions_per_day,
        seed=plan.seed,
        drift_start=drift_start,
        drift_kind=plan.drift_kind,
    )
    echo(f"   {summary.transactions} transactions, {summary.frauds} fraud, {summary.labels} labels")

    echo("== waiting for the dag-processor to parse the DAGs")
    wait_for_dag("feature_pipeline", env)
    # Unpaused: the scheduler runs yesterday itself (it waits for the backfill through depends_on_past).
    stack.airflow_cli(["dags", "unpause", "feature_pipeline"], env, check=False)
    echo(f"== backfilling feature_pipeline {plan.start} .. {plan.last_backfill_day} (airflow backfill create)")
    started = time.monotonic()
    states = backfill("feature_pipeline", plan.start, plan.last_backfill_day, env, echo)
    minutes = (time.monotonic() - started) / 60

    echo("== training the first champion (train_model, local runner)")
    cutoff = plan.last_backfill_day + dt.timedelta(days=1)
    train_state = trigger_and_wait(
        "train_model", {"cutoff": str(cutoff), "reason": "demo: first champion", "triggered_by": "demo"}, env, echo
    )

    score_states: dict = {}
    if train_state == "success" and plan.score_days > 0:
        first = max(plan.start, plan.last_backfill_day - dt.timedelta(days=plan.score_days - 1))
        # Unpaused: the scheduler scores yesterday once feature_pipeline has published it.
        stack.airflow_cli(["dags", "unpause", "batch_score"], env, check=False)
        echo(f"== scoring {first} .. {plan.last_backfill_day} with the champion (batch_score backfill)")
        score_states = backfill("batch_score", first, plan.last_backfill_day, env, echo)

    days = tables.day_range(plan.start, plan.last_backfill_day)
    echo("\n== summary")
    echo(f"feature_pipeline runs: {states} in {minutes:.1f} min")
    echo(f"train_model: {train_state}")
    echo(f"batch_score runs: {score_states or 'not run'} (Postgres: loopline.transaction_scores, scoring_runs)")
    echo(champion_summary(cfg))
    for name, value in lake_summary(cfg, days).items():
        echo(f"{name:>26}: {value}")
    echo(f"\nAirflow UI: http://127.0.0.1:{stack.AIRFLOW_PORT}  (user admin, password {stack.admin_password()})")
    echo(f"MLflow UI:  {cfg.mlflow.ui_url}")
    echo(f"Lake:       {resolve_uri(cfg.storage.lake_uri)}   Reports: {resolve_uri(cfg.storage.reports_uri)}")
    echo("The stack keeps running; `make down` stops it.")
    scored_ok = score_states.get("failed", 0) == 0
    return 0 if states.get("failed", 0) == 0 and train_state == "success" and scored_ok else 1
