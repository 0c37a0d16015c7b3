"""``loopline demo``: the loop on embedded defaults, through the real scheduler.

Brings the local stack up, generates landing drops with a drift over the last nights, publishes the whole
history with one range backfill (``backfill_range``: every day ingested, gated and featurised as
``feature_pipeline`` would, without a DAG run per day) while printing its progress, trains the first
champion with ``train_model`` as of the first monitored day, scores the monitored
days with a ``batch_score`` backfill, replays ``drift_monitor`` over those nights (a drifted night triggers
``train_model``), re-scores the drifted days when the champion changed, and ends with a summary of runs,
rows at each stage, quarantined rows, the retraining and the champions' AUC against the true-probability
AUC, and where the UIs are. The stack keeps running afterwards (``make down`` stops it).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loopline import lake as tables
from loopline import stack
from loopline.config import LooplineConfig, get_config, resolve_uri
from loopline.health import HEALTH_PREFIX
from loopline.lake import Lake


def default_start(days: int = 60) -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)


@dataclass(frozen=True)
class DemoPlan:
    """60 days of history ending yesterday (UTC), drifted over its last nights.

    The loop is replayed as it would have run: the first champion is trained with what was known on the
    first monitored day, that day and the following ones are scored, and ``drift_monitor`` replays those
    nights (``stable_nights`` before the drift, ``drifted_nights`` in it) and decides on retraining.

    The first champion is a team's first model: a short window (``first_champion_window_days``: with 20
    days of label maturity, 35 days hold 4 training days). The retraining the drift triggers uses the
    configured window (50 days: 19 training days). Labels of the drifted days mature only 20 days later, so
    a retrained model cannot learn the drift itself; what it brings is the history the first model lacked.
    Trained on the same window as the first champion, the challenger only ties it and the gate's margin
    decides by chance; against the short window it was promoted on every date tried
    (``benchmarks/replay_gate.py``; its figures are on the Benchmarks page).
    """

    start: dt.date = field(default_factory=default_start)
    days: int = 60
    transactions_per_day: int = 5000
    drift_kind: str = "covariate"
    stable_nights: int = 3
    drifted_nights: int = 3
    seed: int = 7
    first_champion_window_days: int = 35
    # The promotion path (``loopline demo --promotion``): shortest settings of promotion on evidence. Labels
    # count as matured after ``maturity_days`` (instead of features.label_maturity_days), the pattern drift's
    # retraining fires on the night its labels matured, the retrained model is deployed as shadow, judged on
    # ``evidence_days`` matured days, and the promotion request is approved through the REST API.
    promotion: bool = False
    maturity_days: int = 5
    evidence_days: int = 2
    # Where the inputs come from (``loopline demo --source``): ``landing`` (the generator's drop files) or
    # ``postgres`` (the generator writes tables in the stack's database; see source_environment).
    source: str = "landing"
    # The promotion path's first champion keeps the same handicap: with labels matured after 5 days instead
    # of 20, 35 days would hold 19 training days; 20 days hold 4, as 35 do with 20 days of maturity.
    promotion_first_window_days: int = 20

    @property
    def first_window_days(self) -> int:
        """The first champion's training window (days before its cut-off)."""
        return self.promotion_first_window_days if self.promotion else self.first_champion_window_days

    @property
    def end(self) -> dt.date:
        """The last generated day: yesterday, run by the scheduler itself."""
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def drift_start(self) -> dt.date:
        if self.promotion:
            # drift night -> maturity -> retraining night -> the shadow scores the next days -> maturity ->
            # evidence_days nights of evidence, the last one yesterday
            return self.end - dt.timedelta(days=2 * self.maturity_days + self.evidence_days)
        return self.end - dt.timedelta(days=self.drifted_nights - 1)

    @property
    def retrain_night(self) -> dt.date:
        """Promotion path: the night the drift night's labels have matured and its retraining fires."""
        return self.drift_start + dt.timedelta(days=self.maturity_days)

    @property
    def evidence_nights(self) -> list[dt.date]:
        """Promotion path: the nights whose matured day the shadow scored (compare_shadow has evidence)."""
        first = self.retrain_night + dt.timedelta(days=self.maturity_days + 1)
        return tables.day_range(first, self.end)

    @property
    def first_monitored(self) -> dt.date:
        """The first scored and monitored day, and the first champion's training cut-off."""
        return self.drift_start - dt.timedelta(days=self.stable_nights)

    def __post_init__(self) -> None:
        if self.stable_nights < 1 or self.drifted_nights < 1:
            raise ValueError("the demo needs at least one stable and one drifted night")
        if self.stable_nights + self.drifted_nights >= self.days:
            nights = self.stable_nights + self.drifted_nights
            raise ValueError(f"{self.days} days cannot hold {nights} monitored nights and the history before them")
        if self.promotion and (self.maturity_days < 1 or self.evidence_days < 1):
            raise ValueError("the promotion path needs maturity_days and evidence_days of at least 1")
        if self.promotion and (self.end - self.first_monitored).days + 1 >= self.days:
            raise ValueError(f"{self.days} days are too few for the promotion path's monitored nights")
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {', '.join(SOURCES)}")

    def environment(self) -> dict[str, str]:
        """The stack's settings for this plan (:data:`DEMO_ENVIRONMENT`, plus the promotion path's)."""
        if not self.promotion:
            return dict(DEMO_ENVIRONMENT)
        # One retraining in the run: the cooldown outlasts the nights after the retraining night.
        cooldown = (self.maturity_days + self.evidence_days + 2) * 24
        return {
            **DEMO_ENVIRONMENT,
            "LOOPLINE__PROMOTION__POLICY": "shadow_first",
            "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": str(self.maturity_days),
            "LOOPLINE__PROMOTION__MIN_DAYS": str(self.evidence_days),
            "LOOPLINE__PROMOTION__MIN_POSITIVES": "20",
            "LOOPLINE__DRIFT__COOLDOWN_HOURS": str(cooldown),
        }


_APIS: dict[tuple[str, str], stack.AirflowApi] = {}


def _api(env: dict[str, str]) -> stack.AirflowApi:
    """One logged-in REST client per stack (the demo asks for run states every few seconds)."""
    key = (env.get("LOOPLINE_AIRFLOW_PORT", ""), env.get("LOOPLINE_HOME", ""))
    if key not in _APIS:
        _APIS[key] = stack.AirflowApi.for_env(env)
    return _APIS[key]


def dag_runs(dag_id: str, env: dict[str, str]) -> list[dict]:
    return _api(env).dag_runs(dag_id)


def wait_for_dags(dag_ids: list[str], env: dict[str, str], timeout: float = 180) -> None:
    """Wait until the dag-processor has parsed ``dag_ids`` (a backfill needs the serialized DAG)."""
    stack.airflow_cli(["dags", "reserialize"], env, check=False)
    stack.wait_until(
        lambda: set(dag_ids) <= _api(env).dag_ids(),
        timeout,
        f"DAGs {', '.join(dag_ids)} to be parsed",
    )


# Configuration of the stack the demo starts. Its weekly train_model run would train "today" in the middle of
# a replay of past nights, and race the demo's first champion for the alias: routine retraining is off, runs
# are triggered (the demo's first champion, drift_monitor). A stack already running keeps its own settings.
DEMO_ENVIRONMENT = {"LOOPLINE__TRAINING__SCHEDULE": "null"}

# ``loopline demo --source``: the demo's inputs. ``postgres``: the generated days are tables of SOURCE_SCHEMA in
# the stack's own database, read through its loader connection (postgres.conn_id).
SOURCES = ("landing", "postgres")
SOURCE_SCHEMA = "demo_source"


def source_environment(plan: DemoPlan, cfg: LooplineConfig) -> dict[str, str]:
    """The configuration of the plan's source: nothing for the landing drop; for ``postgres``, both inputs
    as PostgreSQL sources (``sources.transactions`` / ``sources.labels`` overrides, the watermark included):
    the DAGs, the range backfill and the sensors read them from the configuration, with no demo code path."""
    if plan.source == "landing":
        return {}
    from loopline.sources_postgres import source_settings

    return source_settings(SOURCE_SCHEMA, cfg.postgres.conn_id)


def write_source_tables(cfg: LooplineConfig, files: Path, echo: Callable[[str], None]) -> None:
    """``--source postgres``: the generated days into SOURCE_SCHEMA's tables (as the stack's superuser, read
    access granted to the loader role the tasks log in as), then the files go: the landing drops are what
    the runs extract from the tables."""
    import shutil

    import psycopg2

    from loopline.sources_postgres import write_days

    pg = stack.embedded_pg()
    conn = psycopg2.connect(host=pg.host, port=pg.port, user="postgres", dbname="loopline")
    try:
        loaded = write_days(conn, SOURCE_SCHEMA, files, read_role=cfg.postgres.loader_role)
    finally:
        conn.close()
    shutil.rmtree(files)
    echo(
        f"   written to PostgreSQL: {SOURCE_SCHEMA}.transactions {loaded['transactions']} rows, "
        f"{SOURCE_SCHEMA}.labels {loaded['labels']} rows, watermark {SOURCE_SCHEMA}.load_watermark; each day's "
        "rows are extracted into its landing drop by the run that ingests it"
    )


# How often the demo asks for run states: one REST call is cheap (the Benchmarks page, demo), and a phase
# ends on average half a poll after its last run; the demo waits between phases eight times.
POLL_SECONDS = 2

# Runs of a backfill the scheduler keeps active at once (Airflow's default is 10). The demo's DAGs run their
# days in order (depends_on_past, wait_for_downstream), so only two neighbouring days can overlap; every
# further active run only makes the scheduler re-check dependencies that cannot be met yet, each loop.
BACKFILL_MAX_ACTIVE_RUNS = 2


def create_backfill(
    dag_id: str, start: dt.date, end: dt.date, env: dict[str, str], max_active_runs: int = BACKFILL_MAX_ACTIVE_RUNS
) -> None:
    """``airflow backfill create`` over ``start`` .. ``end``, completed runs included (reruns are idempotent)."""
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
            "--max-active-runs",
            str(max_active_runs),
        ],
        env,
        check=False,
    )
    if created.returncode != 0:
        raise RuntimeError(f"airflow backfill create failed:\n{created.stdout[-2000:]}{created.stderr[-2000:]}")


def follow_backfill(
    dag_id: str, start: dt.date, end: dt.date, env: dict[str, str], echo: Callable[[str], None]
) -> dict:
    """Print the state counts of the runs of ``start`` .. ``end`` until every one has finished."""
    expected = (end - start).days + 1
    last = ""
    while True:
        runs = [r for r in dag_runs(dag_id, env) if start <= (_run_day(r) or start) <= end]
        states = Counter(r.get("state") for r in runs)
        line = f"{dag_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + f" (of {expected})"
        if line != last:
            echo(line)
            last = line
        finished = states.get("success", 0) + states.get("failed", 0)
        if len(runs) >= expected and finished >= expected:
            return dict(states)
        time.sleep(POLL_SECONDS)


def backfill(dag_id: str, start: dt.date, end: dt.date, env: dict[str, str], echo: Callable[[str], None]) -> dict:
    """Create a backfill and follow it until every run has finished; returns the final state counts."""
    create_backfill(dag_id, start, end, env)
    return follow_backfill(dag_id, start, end, env, echo)


def range_backfill(
    start: dt.date, end: dt.date, cfg: LooplineConfig, env: dict[str, str], echo: Callable[[str], None]
) -> str:
    """One ``backfill_range`` run over ``start .. end`` (``loopline backfill``), followed to its end; returns its
    final state. Progress lines come from ``backfill_runs`` (days done/total, rows/s, chunk, ETA)."""
    from loopline import backfill

    run_id = backfill.request_range(_api(env), start, end, cfg)
    last = ""
    while True:
        state = next((r.get("state") for r in dag_runs(backfill.DAG_ID, env) if r["run_id"] == run_id), None)
        line = f"{backfill.DAG_ID} {start} .. {end}: {state or 'not created yet'}{_range_progress(cfg, run_id)}"
        if line != last:
            echo(line)
            last = line
        if state in ("success", "failed"):
            return state
        time.sleep(POLL_SECONDS)


def _query(sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of one query on the stack's predictions database (as the superuser over its socket)."""
    import psycopg2

    pg = stack.embedded_pg()
    conn = psycopg2.connect(host=pg.host, port=pg.port, user="postgres", dbname="loopline")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def _range_progress(cfg: LooplineConfig, run_id: str) -> str:
    """``, 12/60 days, 4100 rows/s, chunk ..., ETA 80 s`` from the run's ``backfill_runs`` row (empty if none)."""
    import psycopg2

    if stack.embedded_pg() is None:
        return ""
    try:
        rows = _query(
            f"SELECT days_done, days_total, rows_per_s, current_chunk, eta_seconds FROM "  # noqa: S608
            f"{cfg.postgres.schema_}.backfill_runs WHERE run_id = %s",
            (run_id,),
        )
    except psycopg2.Error:  # progress is a nicety: the run's state is what the demo waits on
        return ""
    row = rows[0] if rows else None
    if not row:
        return ""
    done, total, rate, chunk, eta = row
    eta_text = "?" if eta is None else f"{eta:.0f} s"
    return f", {done}/{total} days, {rate or 0:.0f} rows/s, chunk {chunk}, ETA {eta_text}"


def wait_for_run(dag_id: str, day: dt.date, env: dict[str, str], echo: Callable[[str], None]) -> str:
    """Follow the run of ``dag_id`` for ``day`` the scheduler creates itself; returns its final state."""
    last = ""
    while True:
        runs = [r for r in dag_runs(dag_id, env) if _run_day(r) == day]
        state = runs[0].get("state") if runs else "not created yet"
        if state != last:
            echo(f"{dag_id} {day} (the scheduler's own run): {state}")
            last = state
        if state in ("success", "failed"):
            return state
        time.sleep(POLL_SECONDS)


def _run_day(run: dict) -> dt.date | None:
    logical = run.get("logical_date")
    return dt.date.fromisoformat(str(logical)[:10]) if logical else None


def trigger_and_wait(dag_id: str, conf: dict, env: dict[str, str], echo: Callable[[str], None]) -> str:
    """Trigger one run of ``dag_id`` and follow it to the end; returns its final state."""
    _api(env).unpause(dag_id)
    run_id = f"demo__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    _api(env).trigger(dag_id, run_id, conf)
    return wait_for_runs(dag_id, lambda r: r.get("run_id") == run_id, env, echo).get(run_id, "failed")


def wait_for_runs(
    dag_id: str, wanted: Callable[[dict], bool], env: dict[str, str], echo: Callable[[str], None]
) -> dict[str, str]:
    """Follow the runs of ``dag_id`` that ``wanted`` selects until none is queued or running."""
    last = ""
    while True:
        runs = {r["run_id"]: r.get("state") for r in dag_runs(dag_id, env) if wanted(r)}
        line = ", ".join(f"{run_id}: {state}" for run_id, state in sorted(runs.items())) or "none"
        if line != last:
            echo(f"{dag_id}: {line}")
            last = line
        if runs and all(state in ("success", "failed") for state in runs.values()):
            return runs
        if not runs:
            return {}
        time.sleep(POLL_SECONDS)


def run_states(dag_ids: list[str], env: dict[str, str]) -> dict[str, dict[str, int]]:
    """Final state counts of every run of each DAG (what the Airflow UI's grid shows)."""
    return {d: dict(Counter(r.get("state") for r in dag_runs(d, env))) for d in dag_ids}


def champion(cfg: LooplineConfig) -> tuple[str, int] | None:
    """The champion's (run id, version), or None before the first promotion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(resolve_uri(cfg.mlflow.tracking_uri))
    try:
        version = client.get_model_version_by_alias(cfg.mlflow.registered_model, "champion")
    except MlflowException:
        return None
    return version.run_id, int(version.version)


def scored_auc(cfg: LooplineConfig, truth: Path, days: list[dt.date]) -> dict:
    """ROC AUC of the published scores of ``days`` and of the generator's true probabilities, same rows."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    frames = []
    for day in days:
        uri = lake.partition(tables.SCORES, day)
        files = sorted((truth / f"ds={day}").glob("part-*.csv*"))
        if uri is None or not files:
            continue
        scores = pd.read_parquet(uri, columns=["transaction_id", "score", "model_version"])
        frames.append(scores.merge(pd.concat(pd.read_csv(f) for f in files), on="transaction_id"))
    if not frames:
        return {}
    rows = pd.concat(frames)
    return {
        "model_auc": float(roc_auc_score(rows["is_fraud"], rows["score"])),
        "true_auc": float(roc_auc_score(rows["is_fraud"], rows["fraud_probability"])),
        "rows": len(rows),
        "versions": sorted(int(v) for v in rows["model_version"].unique()),
    }


def retraining_decisions(cfg: LooplineConfig, days: list[dt.date]) -> list[tuple]:
    """drift_monitor's decision per night: (ds, triggered, reason, train_run_id)."""
    return _query(
        f"SELECT ds, triggered, reason, train_run_id FROM {cfg.postgres.schema_}.retraining_decisions "  # noqa: S608 (identifier validated by the config loader)
        "WHERE ds BETWEEN %s AND %s ORDER BY ds",
        (min(days), max(days)),
    )


def alert_summary(cfg: LooplineConfig) -> list[str]:
    """Per scored day (``daily_alerts``): the flag rate against the alert policy's band, and the realized
    precision and recall once the day's labels matured."""
    columns = (
        "ds, model_version, threshold, rows_scored, rows_flagged, alert_rate, alert_band_low, "
        "alert_band_high, alert_out_of_band, realized_precision, realized_recall, frauds"
    )
    # the schema is an identifier validated by the config loader
    rows = _query(f"SELECT {columns} FROM {cfg.postgres.schema_}.daily_alerts ORDER BY ds")  # noqa: S608
    lines = []
    for ds, version, threshold, scored, flagged, rate, low, high, out, precision, recall, frauds in rows:
        band = f"band [{low:.2%}, {high:.2%}]{' ALERT' if out else ''}" if low is not None else "no policy band"
        realized = (
            f"realized precision {precision:.3f}, recall {recall:.3f} ({frauds} frauds)"
            if precision is not None and recall is not None
            else "labels not matured yet"
        )
        rate = rate if rate is not None else (flagged / scored if scored else 0.0)
        lines.append(
            f"{ds} v{version} threshold {threshold:.4g}: flagged {flagged} of {scored} ({rate:.2%}), {band}; {realized}"
        )
    return lines


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
    shadow = _alias(cfg, "shadow")
    if shadow is None:
        echo("== no shadow after the retraining (the gate kept it as challenger, or nothing was retrained): done")
        return
    after = plan.retrain_night + dt.timedelta(days=1)
    echo(f"== shadow v{shadow}: re-scoring {after} .. {plan.end} next to the champion")
    _api(env).unpause("promote_model")
    backfill("batch_score", after, plan.end, env, echo)
    nights = plan.evidence_nights
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


def _alias(cfg: LooplineConfig, alias: str) -> int | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(resolve_uri(cfg.mlflow.tracking_uri))
    try:
        return int(client.get_model_version_by_alias(cfg.mlflow.registered_model, alias).version)
    except MlflowException:
        return None


EXAMPLE_SQL = """  -- the day's flagged transactions, riskiest first
  SELECT transaction_id, score, reasons FROM loopline.transaction_scores
   WHERE ds = '{day}' AND decision = 'flag' ORDER BY score DESC LIMIT 20;
  -- drift and retraining, night by night
  SELECT ds, triggered, reason FROM loopline.retraining_decisions ORDER BY ds;
  (psql -h 127.0.0.1 -p {pg_port} -U {analyst} -d loopline: read-only, see docs/analysts.md)"""


def _auc_line(label: str, auc: dict) -> str:
    if not auc:
        return f"{label}: no scored days"
    ratio = auc["model_auc"] / auc["true_auc"]
    versions = ", ".join(f"v{v}" for v in auc["versions"])
    return (
        f"{label}: {versions} ROC AUC {auc['model_auc']:.4f} vs true-probability AUC {auc['true_auc']:.4f} "
        f"(ratio {ratio:.3f}, {auc['rows']} rows)"
    )


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
    elif first:
        echo("champion after the drift: unchanged (the retrained challenger did not beat it: see train_model's gate)")
    echo(_auc_line(f"drifted days {plan.drift_start} .. {plan.end}, before re-scoring", auc_before))
    if second and second != first:
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
