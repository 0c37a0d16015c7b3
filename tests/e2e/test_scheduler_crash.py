"""The scheduler killed mid-backfill: SIGKILL to its whole process group (scheduler, executor workers and the
task they run) while a ``feature_pipeline`` backfill has a Spark task running, then ``loopline up`` starts a new
scheduler, which resets the orphaned task and finishes the backfill.

Real processes against the real local stack in a throwaway home: ``airflow backfill create`` over three days,
the kill once the second day's ``ingest_drop`` runs, and the lake checked afterwards against the landing drops
(every day published once, every transaction once, nothing failed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from loopline.stack import shell_environment
from tests.conftest import BIN, REPO, stack_test_env

pytestmark = pytest.mark.e2e

START = dt.date(2026, 1, 1)
DAYS = 3
ROWS_PER_DAY = 400


def _run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _metadata(home: Path):
    import psycopg2

    port = json.loads((home / "stack" / "postgres.json").read_text())["port"]  # the socket's name: the TCP port
    return psycopg2.connect(dbname="airflow", user="postgres", host=str(home / "postgres"), port=port)


def _task_states(home: Path) -> list[tuple[str, str, str | None, int]]:
    with contextlib.closing(_metadata(home)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT dr.logical_date::date::text, ti.task_id, ti.state, ti.try_number FROM task_instance ti"
            " JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id"
            " WHERE ti.dag_id = 'feature_pipeline' AND dr.logical_date < %s ORDER BY 1, 2",
            (str(START + dt.timedelta(days=DAYS)),),
        )
        return cur.fetchall()


def _landing_ids(landing: Path, day: dt.date) -> set[str]:
    ids: set[str] = set()
    for path in sorted((landing / "transactions" / f"ds={day}").glob("*.csv*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            next(handle)
            ids.update(line.split(",", 1)[0] for line in handle if line.strip())
    return ids


def _kill_group(pid: int) -> int:
    """SIGKILL the process group ``up`` started and anything forked below it; returns how many died."""
    try:
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"still alive after SIGKILL: {alive}"
    return len(gone)


def test_a_backfill_survives_the_scheduler_killed_mid_task(tmp_path):
    import pyarrow.dataset as pads

    from loopline import demo
    from loopline.lake import FEATURES, RAW_TRANSACTIONS, Lake

    home = tmp_path / "home"
    env = stack_test_env(home)
    loopline = str(BIN / "loopline")
    try:
        up = _run([loopline, "up"], env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        landing = home / "landing"
        generated = _run(
            [loopline, "generate", "--start", str(START), "--days", str(DAYS), "--out", str(landing),
             "--transactions-per-day", str(ROWS_PER_DAY), "--seed", "3"],
            env,
        )  # fmt: skip
        assert generated.returncode == 0, generated.stderr[-3000:]
        stack_env = shell_environment(home, env)
        end = START + dt.timedelta(days=DAYS - 1)
        demo.wait_for_dags(["feature_pipeline"], stack_env)
        # As `make demo` does: a paused DAG's backfill runs are created but never started. (Unpaused, the
        # scheduler also creates its own run for yesterday, which waits for a drop that never comes.)
        _run([str(BIN / "airflow"), "dags", "unpause", "feature_pipeline"], stack_env)
        demo.create_backfill("feature_pipeline", START, end, stack_env)

        # Mid-backfill: the first day is done and the second day's Spark ingest is running.
        second = str(START + dt.timedelta(days=1))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            states = _task_states(home)
            if (second, "ingest_drop", "running", 1) in states:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the second day's ingest never ran: {states}")
        time.sleep(2)  # well inside the Spark job
        scheduler = json.loads((home / "stack" / "airflow-scheduler.pid").read_text())["pid"]
        killed = _kill_group(scheduler)
        killed_at = time.monotonic()
        assert killed >= 2, "the scheduler ran its task in a process of its own group"
        at_kill = {(day, task): state for day, task, state, _ in _task_states(home)}
        assert at_kill[second, "ingest_drop"] == "running"  # as the dead scheduler left it
        assert all(state != "failed" for state in at_kill.values())

        # A supervisor (here: `loopline up`) starts a new scheduler; nothing else was stopped.
        restarted = _run([loopline, "up"], env)
        assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
        assert "airflow-scheduler: starting" in restarted.stdout
        assert "airflow-api-server: starting" not in restarted.stdout

        final = demo.follow_backfill("feature_pipeline", START, end, stack_env, echo=lambda line: None)
        assert final == {"success": DAYS}, _task_states(home)
        print(f"killed {killed} processes; backfill of {DAYS} days complete {time.monotonic() - killed_at:.0f} s later")
        states = _task_states(home)
        assert all(state == "success" for _, _, state, _ in states), states
        retried = [(day, task, tries) for day, task, _, tries in states if tries > 1]
        assert (second, "ingest_drop") in {(day, task) for day, task, _ in retried}, states

        # The lake: every day published once, each landed transaction once, in raw and in features.
        lake = Lake(str(home / "lake"))
        for offset in range(DAYS):
            day = START + dt.timedelta(days=offset)
            expected = _landing_ids(landing, day)
            assert expected
            for table in (RAW_TRANSACTIONS, FEATURES):
                uri = lake.partition(table, day)
                assert uri is not None, f"{table} ds={day} was never published"
                ids = pads.dataset(uri, format="parquet").to_table(columns=["transaction_id"]).column(0).to_pylist()
                assert len(ids) == len(set(ids)), f"{table} ds={day} holds duplicates"
                assert set(ids) == expected, f"{table} ds={day}: {len(set(ids))} of {len(expected)} transactions"
            versions = [p for p in Path(lake.partition_root(FEATURES, day)).glob("run=*")]
            assert len(versions) <= 2  # the committed version and at most its predecessor: orphans swept
    finally:
        _run([loopline, "down"], env, timeout=180)
