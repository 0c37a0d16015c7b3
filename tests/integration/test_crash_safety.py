"""Crash safety with real processes: a writer is SIGKILLed while its write is provably in progress.

Each test starts the real entrypoint as a child process in its own process group, polls until the write is
visibly under way (Spark's ``_temporary`` folder inside an uncommitted version, rows counted by Postgres in
the open COPY, an MLflow run in ``RUNNING`` with its metrics logged), then sends SIGKILL to the whole group
(the Spark JVM included). A reader runs beside the writer the whole time and records what it sees; after
the kill and after a rerun, what readers see must be the previous complete state or the new complete one,
never a mix, and the rerun must produce exactly what a clean run produces.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from loopline import lake as tables
from loopline.lake import Lake
from spark_jobs.ingest import RAW_LAYER

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------------------------------------------------
# helpers


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """The child in a new session, so SIGKILL reaches every process it started (spark-submit's JVM too)."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def poll(what: str, check: Callable[[], object], process: subprocess.Popen, log: Path, timeout: float = 120):
    """``check()``'s first truthy value; fails if the child exits first (it finished before we could kill it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"child exited ({process.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.005)
    kill_group(process)
    pytest.fail(f"no {what} after {timeout}s:\n{log.read_text()[-4000:]}")


def run_to_end(command: list[str], env: dict[str, str], log: Path, timeout: float = 240) -> str:
    process = start(command, env, log)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise
    text = log.read_text()
    assert process.returncode == 0, text[-5000:]
    return text


class Reader(threading.Thread):
    """Reads what a consumer would read, over and over, until stopped; keeps every distinct observation."""

    def __init__(self, observe: Callable[[], object], pause: float = 0.05):
        super().__init__(daemon=True)
        self.observe, self.pause = observe, pause
        self.seen: list[object] = []
        self.reads = 0
        self.errors: list[BaseException] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                value = self.observe()
            except BaseException as exc:  # reported by stop()
                self.errors.append(exc)
                return
            self.reads += 1
            if value not in self.seen:
                self.seen.append(value)
            self._done.wait(self.pause)

    def stop(self) -> list[object]:
        self._done.set()
        self.join(timeout=30)
        assert self.errors == [], self.errors
        return self.seen


# ---------------------------------------------------------------------------------------------------------
# 1. Spark ingest (spark-submit, local JVM) killed while a table of the raw layer is being written

DS = dt.date(2026, 3, 1)
# The tables a reader (the feature job, the gate) sees through Lake.partition after ingest.
INGEST_TABLES = (*RAW_LAYER, tables.QUARANTINE_TRANSACTIONS, tables.QUARANTINE_LABELS)
# Written after raw transactions are complete (with _SUCCESS) but before publish commits anything.
KILL_DURING = (tables.RAW_LABELS, tables.CUSTOMER_DAILY, tables.LABELED_TRANSACTIONS, tables.MERCHANT_LABEL_DAILY)


def digest(lake: Lake, table: str) -> tuple[int, str] | None:
    """Rows and a content hash of the committed partition, read as a non-Spark consumer would (pyarrow)."""
    uri = lake.partition(table, DS)
    if uri is None:
        return None
    assert (Path(uri) / "_SUCCESS").exists(), f"{table}: committed version {uri} is not complete"
    data = lake.arrow_dataset(uri).to_table()
    rows = sorted(json.dumps(row, sort_keys=True, default=str) for row in data.to_pylist())
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()


def lake_view(lake: Lake) -> dict[str, tuple[int, str] | None]:
    return {table: digest(lake, table) for table in INGEST_TABLES}


def in_flight(lake: Lake, candidates: tuple[str, ...]) -> list[str]:
    """Tables with a version of DS that Spark is writing right now (its _temporary folder is there)."""
    return [table for table in candidates if any(Path(lake.partition_root(table, DS)).glob("run=*/_temporary"))]


def test_spark_ingest_killed_mid_write(tmp_path, spark_connect_url):
    from loopline import stack, synth

    synth.generate(DS, 1, tmp_path / "landing", transactions_per_day=3000, seed=11)
    lake = Lake(str(tmp_path / "lake"))
    # Without the Spark Connect marker a remote session in this process leaves behind: with it, the child's
    # pyspark would look for a Connect server instead of starting its own JVM.
    inherited = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    env = {
        **inherited,
        "LOOPLINE_HOME": str(tmp_path / "home"),
        "LOOPLINE__STORAGE__LANDING_URI": str(tmp_path / "landing"),
        "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake"),
        "SPARK_HOME": str(stack.spark_home()),
        "PYSPARK_PYTHON": sys.executable,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    # The run that is killed: spark-submit with its own local JVM, so SIGKILL stops the executor mid-write.
    command = [
        str(stack.spark_home() / "bin" / "spark-submit"),
        *("--master", "local[2]", "--driver-memory", "768m"),
        *("--driver-java-options", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"),  # a short-lived JVM
        *("--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.ui.enabled=false"),
        *("--conf", "spark.sql.session.timeZone=UTC", "--conf", "spark.driver.bindAddress=127.0.0.1"),
        *("--conf", "spark.driver.host=127.0.0.1", "--conf", f"spark.local.dir={tmp_path / 'spark-tmp'}"),
        str(REPO / "spark_jobs" / "ingest.py"),
        "--ds",
        DS.isoformat(),
    ]

    # Clean run and rerun: the same entrypoint as a thin client of the session's Spark Connect server.
    thin = [sys.executable, "-m", "spark_jobs.ingest", "--ds", DS.isoformat(), "--remote", spark_connect_url]

    # A clean run: the previous complete version every reader must keep seeing while the next one crashes.
    run_to_end(thin, env, tmp_path / "clean.log")
    clean = lake_view(lake)
    assert clean[tables.RAW_TRANSACTIONS][0] == 3000
    assert all(view is not None for view in clean.values()), clean
    committed = {table: lake.current_version(table, DS) for table in INGEST_TABLES}

    reader = Reader(lambda: lake_view(lake), pause=0.1)
    reader.start()
    faults = 0
    # Kill while a later table is being written: raw transactions are then fully written (with _SUCCESS)
    # but not committed. Retried only if the write finished between seeing it and the kill.
    for attempt in range(3):
        log = tmp_path / f"killed-{attempt}.log"
        process = start(command, env, log)
        busy = poll("a raw-layer write in progress", lambda: in_flight(lake, KILL_DURING), process, log)
        kill_group(process)
        if in_flight(lake, tuple(busy)):  # nothing can change the files after SIGKILL: still mid-write
            faults += 1
            break
    assert faults == 1, "the write never stayed in progress long enough to be killed"
    assert process.returncode == -signal.SIGKILL

    # What a reader sees right after the crash: the previous complete version, pointers untouched.
    assert reader.errors == [], reader.errors
    assert lake_view(lake) == clean
    assert {table: lake.current_version(table, DS) for table in RAW_LAYER} == {t: committed[t] for t in RAW_LAYER}
    # Raw transactions were fully written (with _SUCCESS) by the killed run, but never committed.
    raw_root = Path(lake.partition_root(tables.RAW_TRANSACTIONS, DS))
    raw_new = [p for p in raw_root.glob("run=*") if p.name != f"run={committed[tables.RAW_TRANSACTIONS]}"]
    assert raw_new, "the killed run wrote no raw transactions"
    assert all((p / "_SUCCESS").exists() for p in raw_new), raw_new

    # The rerun completes and equals the clean run, row for row; the crashed versions are swept.
    run_to_end(thin, env, tmp_path / "rerun.log")
    seen = reader.stop()
    after = lake_view(lake)
    assert after == clean
    for table in RAW_LAYER:
        assert lake.current_version(table, DS) not in (None, committed[table])
        left = {p.name for p in Path(lake.partition_root(table, DS)).glob("run=*")}
        assert left == {f"run={lake.current_version(table, DS)}", f"run={committed[table]}"}, (table, left)
    # Every read during the crash and the rerun saw one complete state: the clean one (equal to the rerun).
    assert seen == [clean], seen
    assert reader.reads > 0
    print(f"spark ingest: {faults} SIGKILL mid-write of {busy}, {reader.reads} consistent reads, rows lost 0")


# ---------------------------------------------------------------------------------------------------------
# 2. The Postgres load of a day of scores killed inside its transaction, during the COPY

LOAD_CHILD = """
import datetime as dt, json, sys
import psycopg2
from loopline.score_load import load_day
from tests.integration.test_score_load import run_row, scores
a = json.loads(sys.argv[1])
ds = dt.date.fromisoformat(a["ds"])
conn = psycopg2.connect(host=a["host"], port=a["port"], user=a["user"], dbname=a["db"], application_name=a["app"])
print(load_day(conn, a["schema"], run_row(ds, version=a["version"]), scores(ds, a["rows"], version=a["version"])))
"""
OLD_ROWS, NEW_ROWS = 5_000, 200_000


def test_score_load_killed_mid_transaction(postgres, tmp_path):
    from tests.integration.test_score_load import DS as LOAD_DS

    schema = f"crash_{uuid.uuid4().hex[:8]}"
    postgres.migrate(schema)
    app = f"loopline-crash-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def load(version: int, rows: int) -> list[str]:
        args = {"ds": LOAD_DS.isoformat(), "host": postgres.host, "port": postgres.port, "user": postgres.loader}
        args |= {"db": postgres.database, "schema": schema, "app": app, "version": version, "rows": rows}
        return [sys.executable, "-c", LOAD_CHILD, json.dumps(args)]

    def day_view():
        """What an analyst's query sees of the day: count, versions and a hash of every row."""
        return postgres.query(
            f"SELECT count(*), array_agg(DISTINCT model_version), count(DISTINCT transaction_id),"
            f" md5(string_agg(transaction_id || '|' || score::text || '|' || decision, ',' ORDER BY transaction_id))"
            f" FROM {schema}.transaction_scores WHERE ds = %s",
            LOAD_DS,
        )[0]

    def runs():
        return postgres.query(f"SELECT ds, role, model_version, rows_scored FROM {schema}.scoring_runs")

    try:
        run_to_end(load(1, OLD_ROWS), env, tmp_path / "first.log")
        old = day_view()
        assert old[:3] == (OLD_ROWS, [1], OLD_ROWS)

        reader = Reader(day_view, pause=0.02)
        reader.start()
        log = tmp_path / "killed.log"
        process = start(load(2, NEW_ROWS), env, log)

        def copying():
            # Rows counted by the server inside the open transaction (COPY progress, not yet committed).
            rows = postgres.query(
                "SELECT p.pid, p.tuples_processed FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid)"
                " WHERE a.application_name = %s AND a.xact_start IS NOT NULL AND p.tuples_processed >= 20000",
                app,
            )
            return rows[0] if rows else None

        pid, copied = poll("rows copied inside the open transaction", copying, process, log)
        kill_group(process)
        assert process.returncode == -signal.SIGKILL
        assert copied < NEW_ROWS
        deadline = time.monotonic() + 30  # the server notices the lost client and rolls back
        while postgres.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert day_view() == old
        assert runs() == [(LOAD_DS, "champion", 1, OLD_ROWS)]
        locks = "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        assert postgres.query(f"{locks} WHERE l.locktype = 'advisory' AND d.datname = current_database()") == [(0,)]

        run_to_end(load(2, NEW_ROWS), env, tmp_path / "rerun.log")
        new = day_view()
        seen = reader.stop()
        assert new[:3] == (NEW_ROWS, [2], NEW_ROWS)  # exactly the day's rows, once each
        assert runs() == [(LOAD_DS, "champion", 2, NEW_ROWS)]
        # Each read saw the previous day whole or the new day whole, never a mix or an empty day.
        assert all(view in (old, new) for view in seen), seen
        assert old in seen
        print(f"score load: 1 SIGKILL after {copied} of {NEW_ROWS} rows copied, {reader.reads} reads, rows lost 0")
    finally:
        conn = postgres.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


# ---------------------------------------------------------------------------------------------------------
# 3. The trainer CLI killed while its MLflow run is logging

MODEL = "loopline-crash-model"
CUTOFF = dt.date(2026, 1, 31)


def test_trainer_killed_mid_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service import utils

    from loopline import registry
    from loopline.config import load_config
    from loopline.training.synthetic import write_synthetic_lake
    from tests.models import fit, register

    write_synthetic_lake(tmp_path / "lake", dt.date(2026, 1, 1), 30, rows_per_day=250, seed=3)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)  # the gate sets it: restored afterwards
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(tmp_path / "home"),
        "LOOPLINE__MLFLOW__ARTIFACT_URI": str(tmp_path / "artifacts"),
        "LOOPLINE__DRIFT__REFERENCE_SAMPLE_SIZE": "200",
    }
    client = MlflowClient(tracking_uri=tracking)
    champion = register(fit(rounds=30), tracking, tmp_path / "champion-artifacts", MODEL, registry.CHAMPION)

    def trainer(try_number: int) -> list[str]:
        return [
            *(sys.executable, "-m", "loopline.training", "--lake", str(tmp_path / "lake"), "--tracking-uri", tracking),
            *("--cutoff", CUTOFF.isoformat(), "--model-type", "xgboost", "--window-days", "30"),
            *("--validation-days", "4", "--holdout-days", "5", "--label-maturity-days", "5", "--max-rounds", "40"),
            *("--run-name", f"train_model__manual__{CUTOFF}__try{try_number}"),
        ]

    def champion_version():
        return int(registry._alias_version(client, MODEL, registry.CHAMPION).version)

    reader = Reader(champion_version, pause=0.2)  # what batch_score resolves: models:/<name>@champion
    reader.start()

    log = tmp_path / "killed.log"
    process = start(trainer(1), env, log)

    def logging_run():
        experiment = client.get_experiment_by_name("loopline-fraud")
        if experiment is None:
            return None
        found = client.search_runs(
            [experiment.experiment_id], f"attributes.run_name = 'train_model__manual__{CUTOFF}__try1'"
        )
        run = found[0] if found else None
        return run if run and run.info.status == "RUNNING" and "holdout_roc_auc" in run.data.metrics else None

    killed = poll("an MLflow run in RUNNING with its metrics logged", logging_run, process, log)
    kill_group(process)
    assert process.returncode == -signal.SIGKILL
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"  # it never got to finish
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [(int(v.version), v.run_id) for v in versions] == [(champion, versions[0].run_id)]
    assert versions[0].run_id != killed.info.run_id
    assert champion_version() == champion

    # The rerun of the same day (the next try) trains to the end; its gate, run twice (a retried task),
    # registers exactly one version, and the killed run never gets one.
    out = run_to_end(trainer(2), env, tmp_path / "rerun.log")
    result = json.loads(out.strip().splitlines()[-1].removeprefix("LOOPLINE_RESULT "))
    cfg = load_config()
    moves = [
        registry.register_and_gate(
            client,
            run_id=result["run_id"],
            model_name=MODEL,
            gate=cfg.gate,
            threshold=cfg.scoring.threshold,
            triggered_by="manual",
            reason="crash-safety rerun",
        )[1]
        for _ in range(2)
    ]
    seen = reader.stop()
    assert moves[0].version == moves[1].version == champion + 1
    versions = sorted((int(v.version), v.run_id) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [(champion, versions[0][1]), (champion + 1, result["run_id"])]
    assert killed.info.run_id not in {run_id for _, run_id in versions}
    # The next attempt ended the dead one: it no longer shows as running.
    assert client.get_run(killed.info.run_id).info.status == "KILLED"
    assert "loopline.abandoned" in client.get_run(killed.info.run_id).data.tags
    # The champion changed only through the gate, never because of the killed run.
    expected = {champion} | ({champion + 1} if moves[0].alias == registry.CHAMPION else set())
    assert set(seen) <= expected, seen
    assert seen[0] == champion, seen
    print(f"trainer: 1 SIGKILL of run {killed.info.run_id} while RUNNING, {reader.reads} alias reads, 0 stray versions")
