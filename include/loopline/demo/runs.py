"""The demo's runs through Airflow's REST API and CLI: DAGs parsed, backfills created and followed, runs
triggered and waited for.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable

from loopline import lake as tables
from loopline import stack
from loopline.config import LooplineConfig
from loopline.demo.summary import _query

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


def replay_nights(
    dag_id: str,
    start: dt.date,
    end: dt.date,
    env: dict[str, str],
    echo: Callable[[str], None],
    between: Callable[[dt.date], None],
) -> dict:
    """Replay ``dag_id``'s nights ``start`` .. ``end`` in order, one at a time, with ``between(night)`` run after
    each night and before the next one starts; returns the final state counts.

    Nights are a day apart and a replay takes minutes: replayed back to back, a night's retraining would still
    be running when the next nights decide (and be suppressed by it). One backfill takes every night before
    the DAG is unpaused (as :func:`backfill`: the scheduler then finds yesterday taken), and is paused between
    nights. The last night is not paused after: no run is left to hold, and the scheduler marks the backfill
    complete once that night ends (a completed backfill refuses pause and unpause).

    The pause follows the night's start within one poll; the next night can only start after this one ends
    (one active run), which takes far longer than a poll.
    """
    api = _api(env)
    create_backfill(dag_id, start, end, env, max_active_runs=1)
    backfill_id = api.open_backfill(dag_id)
    if backfill_id is None:
        raise RuntimeError(f"airflow backfill create made no open backfill of {dag_id}")
    api.pause_backfill(backfill_id)
    api.unpause(dag_id)
    states: Counter = Counter()
    nights = tables.day_range(start, end)
    for night in nights:
        api.pause_backfill(backfill_id, paused=False)
        state = _night_state(dag_id, night, env, {"queued"})
        if night != nights[-1]:
            api.pause_backfill(backfill_id)  # this night started (max one active run): the next waits
        if state not in ("success", "failed"):
            state = _night_state(dag_id, night, env, {"queued", "running"})
        echo(f"{dag_id} {night}: {state}")
        states[state] += 1
        between(night)
    return dict(states)


# How long one replayed night may stay queued or running before the demo gives up on it.
NIGHT_TIMEOUT_SECONDS = 3600


def _night_state(
    dag_id: str, night: dt.date, env: dict[str, str], waiting: set[str], timeout: float = NIGHT_TIMEOUT_SECONDS
) -> str:
    """The state of ``dag_id``'s run of ``night`` once it is no longer in one of ``waiting``; raises
    TimeoutError naming the run when that takes longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        states = [r.get("state") for r in dag_runs(dag_id, env) if _run_day(r) == night]
        if states and states[0] not in waiting:
            return states[0]
        if time.monotonic() > deadline:
            seen = states[0] if states else "not created"
            raise TimeoutError(
                f"{dag_id}'s run of {night} is still {seen} after {timeout:.0f} s: see the scheduler's log "
                f"(`loopline status`) and the run in the UI"
            )
        time.sleep(POLL_SECONDS)


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
