"""Cluster mode from nothing: the production topology as processes, driven through all four DAGs.

``loopline up --profile cluster`` starts Airflow with the CeleryExecutor (two workers, a Redis broker), a Spark
standalone master with two workers behind the Spark Connect server (token authentication), an S3-compatible
server for the landing drops, the reports and the MLflow artifacts, MLflow behind basic auth, and the analysts'
PostgreSQL on TCP with a password. Landing drops go into S3; ``feature_pipeline`` is backfilled by the real
scheduler, with two faults injected while Spark tasks run (a Celery worker killed, then a Spark worker); then
``train_model``, ``batch_score`` and ``drift_monitor`` run the last day. One module-wide stack: it is the
slowest fixture of the suite (about a minute to start), and every assertion below reads what that one run left.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BIN, free_port, stack_test_env

# One module-wide stack and loop: the first test carries their setup (about ten minutes on two cores).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

DAYS = 10
ROWS_PER_DAY = 3000
# The shortest training that still sees frauds: trained today on the 10 days ending yesterday, labels mature in
# 6 days (the generator reports most frauds within a week), so one holdout, one validation and three training
# days; the holdout day has about 20 reported frauds.
SETTINGS = {
    "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": "6",
    "LOOPLINE__TRAINING__WINDOW_DAYS": "10",
    "LOOPLINE__TRAINING__VALIDATION_DAYS": "1",
    "LOOPLINE__TRAINING__HOLDOUT_DAYS": "1",
    "LOOPLINE__TRAINING__SCHEDULE": "null",
    "LOOPLINE__GATE__ABSOLUTE_FLOOR": "0.55",
    "LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS": "5",
    "LOOPLINE__RETRY__DELAY_SECONDS": "5",  # the killed task's retry starts at once (default: 2 minutes)
    # A killed worker's task is noticed after 30 s without heartbeat instead of Airflow's default 5 minutes.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}
SPARK_TASKS = {"ingest_drop", "publish_raw", "build_features", "publish_features"}


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]  # what a shell gets from `source .loopline/stack/env.sh`
    secrets: dict[str, str]
    start: dt.date
    end: dt.date
    landed: dict[dt.date, int]  # transactions put into the landing bucket, per day

    @property
    def ports(self):
        from loopline.cluster import Ports

        return Ports.from_env(self.env)

    def pid(self, component: str) -> int:
        return json.loads((self.home / "stack" / f"{component}.pid").read_text())["pid"]

    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.ports.s3_endpoint,
            aws_access_key_id=self.secrets["S3_ACCESS_KEY"],
            aws_secret_access_key=self.secrets["S3_SECRET_KEY"],
            region_name="us-east-1",
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _loopline(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "loopline"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _upload_landing(cluster: Cluster, local: Path) -> dict[dt.date, int]:
    """Put the generated drops into the landing bucket, each day's marker last; returns the rows per day."""
    client = cluster.s3()
    rows: dict[dt.date, int] = {}
    for kind in ("transactions", "labels"):
        for folder in sorted((local / kind).iterdir()):
            files = sorted(p for p in folder.iterdir() if p.name != "_SUCCESS")
            for path in [*files, folder / "_SUCCESS"]:
                client.upload_file(str(path), "loopline-landing", f"landing/{kind}/{folder.name}/{path.name}")
            if kind == "transactions":
                day = dt.date.fromisoformat(folder.name.removeprefix("ds="))
                rows[day] = sum(_data_lines(p) for p in files)
    return rows


def _data_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    from loopline import demo, synth

    root = tmp_path_factory.mktemp("cluster")
    home = root / "home"
    env = stack_test_env(home)
    env.update({f"LOOPLINE_{name}_PORT": str(free_port()) for name in ("REDIS", "S3", "POSTGRES")})
    env.update({f"LOOPLINE_{name}_PORT": str(free_port()) for name in ("SPARK_MASTER", "SPARK_MASTER_UI")})
    env.update(SETTINGS)
    try:
        up = _loopline(["up", "--profile", "cluster"], env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        from loopline import stack

        start = demo.default_start(DAYS)
        state = Cluster(
            home,
            stack.shell_environment(home, env),
            json.loads((home / "stack" / "secrets.json").read_text()),
            start,
            start + dt.timedelta(days=DAYS - 1),
            {},
        )
        synth.generate(start, DAYS, root / "landing", transactions_per_day=ROWS_PER_DAY, seed=11, compress=True)
        state.landed.update(_upload_landing(state, root / "landing"))
        yield state
    finally:
        _loopline(["down"], env, timeout=300)


def _tis(api, dag_id: str) -> list[dict]:
    """Every task instance of every run of ``dag_id`` (the REST API's ``~`` run wildcard)."""
    return api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances?limit=1000")["task_instances"]


def _wait(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _kill_group(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)  # the component and everything it started (task processes, executors)


@pytest.fixture(scope="module")
def loop(cluster: Cluster) -> dict:
    """The loop through the cluster, with the faults; returns what the assertions need."""
    from loopline import demo, stack

    env = cluster.env
    api = stack.AirflowApi.for_env(env)
    demo.wait_for_dags(["feature_pipeline", "train_model", "batch_score", "drift_monitor"], env)
    echo = print
    api.unpause("feature_pipeline")  # the scheduler runs yesterday itself, after the backfill's days
    demo.create_backfill("feature_pipeline", cluster.start, cluster.end - dt.timedelta(days=1), env)

    # Fault 1: a Celery worker killed (with its task processes) while a Spark task of the backfill runs.
    running = _wait(
        lambda: [t for t in _tis(api, "feature_pipeline") if t["task_id"] in SPARK_TASKS and t["state"] == "running"],
        600,
        "a running Spark task",
    )[0]
    worker = running["hostname"].rsplit("-airflow-", 1)[-1]
    _kill_group(cluster.pid(f"airflow-{worker}"))
    echo(f"killed airflow-{worker} while {running['task_id']} of {running['dag_run_id']} ran")

    # Fault 2: a Spark worker (and its executor) killed while a later day's feature job runs.
    later = _wait(
        lambda: [
            t
            for t in _tis(api, "feature_pipeline")
            if t["task_id"] == "build_features" and t["state"] == "running" and t["dag_run_id"] != running["dag_run_id"]
        ],
        900,
        "a later build_features",
    )[0]
    _kill_group(cluster.pid("spark-worker-1"))
    echo(f"killed spark-worker-1 while {later['task_id']} of {later['dag_run_id']} ran")
    restarted = _loopline(["up"], env)  # starts again what is missing: the killed workers
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]

    states = demo.follow_backfill("feature_pipeline", cluster.start, cluster.end - dt.timedelta(days=1), env, echo)
    last = demo.wait_for_run("feature_pipeline", cluster.end, env, echo)
    trained = demo.trigger_and_wait(
        "train_model",
        {"cutoff": str(cluster.end + dt.timedelta(days=1)), "max_rounds": 60, "reason": "cluster e2e"},
        env,
        echo,
    )
    api.unpause("batch_score")
    scored = demo.wait_for_run("batch_score", cluster.end, env, echo)
    api.unpause("drift_monitor")
    monitored = demo.wait_for_run("drift_monitor", cluster.end, env, echo)
    return {
        "backfill": states,
        "last_day": last,
        "train": trained,
        "score": scored,
        "drift": monitored,
        "killed_task": running,
        "killed_worker": worker,
        "spark_fault_task": later,
        "api": api,
    }


def test_every_dag_succeeds_despite_the_faults(loop):
    assert loop["backfill"] == {"success": DAYS - 1}, loop["backfill"]
    assert (loop["last_day"], loop["train"], loop["score"], loop["drift"]) == ("success",) * 4


def test_the_task_of_the_killed_worker_ran_again(loop):
    killed = loop["killed_task"]
    tis = _tis(loop["api"], "feature_pipeline")
    again = next(t for t in tis if (t["dag_run_id"], t["task_id"]) == (killed["dag_run_id"], killed["task_id"]))
    assert again["state"] == "success"
    assert again["try_number"] > killed["try_number"], (killed, again)


def test_task_instances_ran_on_both_celery_workers(loop):
    hosts = {
        t["hostname"].rsplit("-airflow-", 1)[-1]
        for dag in ("feature_pipeline", "batch_score")
        for t in _tis(loop["api"], dag)
        if t.get("hostname")
    }
    assert {"worker-1", "worker-2"} <= hosts, hosts


def test_spark_work_ran_on_executors_of_both_standalone_workers(cluster, loop):
    from loopline import cluster as profile

    status = profile.spark_master_status(cluster.ports)
    assert sum(w["state"] == "ALIVE" for w in status["workers"]) == 2, status["workers"]
    (app,) = [a for a in status["activeapps"] if a["name"] == "loopline-spark-connect"]
    for worker in profile.SPARK_WORKERS:
        logs = list((cluster.home / "spark-cluster" / worker / app["id"]).glob("*/stderr"))
        finished = sum(log.read_text(errors="replace").count("Finished task") for log in logs)
        assert finished > 0, f"no task of {app['id']} finished on {worker}: {logs}"


def test_spark_refuses_a_worker_without_the_cluster_secret_and_a_client_without_the_token(cluster, loop):
    from loopline import cluster as profile
    from loopline import stack

    log = cluster.home / "intruder.log"
    command = [str(stack.spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker"]
    command += ["--host", "127.0.0.1", "--webui-port", "0", "--cores", "1", "--memory", "512m"]
    env = {**cluster.env, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(stack.spark_home())}
    with log.open("w") as out:
        intruder = subprocess.Popen([*command, cluster.ports.master_url], stdout=out, stderr=out, env=env)
    try:
        _wait(lambda: "Failed to connect to master" in log.read_text(errors="replace"), 120, "the intruder's refusal")
        alive = [w for w in profile.spark_master_status(cluster.ports)["workers"] if w["state"] == "ALIVE"]
        assert len(alive) == len(profile.SPARK_WORKERS), alive
    finally:
        intruder.kill()
        intruder.wait(timeout=30)

    _, port = stack.host_port(load_cfg(cluster).spark.connect_url, 15002)
    code = "from pyspark.sql import SparkSession as S; print(S.builder.remote({!r}).create().range(3).count())"
    for url, allowed in (
        (f"sc://localhost:{port}", False),
        (f"sc://localhost:{port}/;token={cluster.secrets['SPARK_TOKEN']}", True),
    ):
        probe = subprocess.run(
            [str(BIN / "python"), "-c", code.format(url)], capture_output=True, text=True, timeout=180, env=cluster.env
        )
        if allowed:
            assert probe.stdout.strip() == "3", probe.stderr[-2000:]
        else:
            assert "UNAUTHENTICATED" in probe.stderr, probe.stderr[-2000:]


def load_cfg(cluster: Cluster):
    from loopline.config import load_config

    return load_config(environ=cluster.env)


def test_no_partition_half_published_and_no_row_lost(cluster, loop, monkeypatch):
    from loopline import lake as tables
    from loopline.config import load_config
    from loopline.lake import Lake

    monkeypatch.setenv("LOOPLINE_HOME", str(cluster.home))  # the lake's relative path resolves there
    cfg = load_config(environ=cluster.env)
    lake = Lake(cfg.resolve(cfg.storage.lake_uri))
    for day, rows in cluster.landed.items():
        for table in (tables.RAW_TRANSACTIONS, tables.FEATURES):
            version = lake.current_version(table, day)
            assert version, f"{table} {day} not published"
            folder = Path(lake.version_uri(table, day, version))
            assert (folder / "_SUCCESS").exists(), f"{table} {day} points at an incomplete version"
            assert lake.arrow_dataset(str(folder)).count_rows() == rows, (table, day)


def test_objects_are_in_s3(cluster, loop):
    assert any(key.endswith("/_SUCCESS") for key in cluster.keys("loopline-landing", "landing/transactions/"))
    assert any(key.endswith(".html") for key in cluster.keys("loopline-reports")), "no report in S3"
    assert any("MLmodel" in key for key in cluster.keys("loopline-mlflow")), "no model artifact in S3"


def test_analyst_tables_hold_the_day_over_tcp_with_a_password(cluster, loop):
    import psycopg2

    port = cluster.ports.postgres

    def connect(user: str, password: str):
        return psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="loopline")

    # the analyst (read-only) sees what the tasks, logged in as the loader, wrote
    with connect("loopline_analyst", cluster.secrets["PG_ANALYST_PASSWORD"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM loopline.transaction_scores WHERE ds = %s", (cluster.end,))
        assert cur.fetchone()[0] == cluster.landed[cluster.end]
        cur.execute("SELECT count(*) FROM loopline.drift_runs WHERE ds = %s", (cluster.end,))
        assert cur.fetchone()[0] == 1
    wrong = "not-" + cluster.secrets["PG_LOADER_PASSWORD"]
    with pytest.raises(psycopg2.OperationalError, match="password"):
        connect("loopline_loader", wrong)
    with pytest.raises(psycopg2.OperationalError):
        connect("loopline", cluster.secrets["PG_LOADER_PASSWORD"])  # the old single role may no longer log in


def test_mlflow_refuses_anonymous_requests_and_holds_the_champion(cluster, loop):
    from mlflow import MlflowClient

    from loopline.config import load_config

    cfg = load_config(environ=cluster.env)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cfg.mlflow.ui_url}/api/2.0/mlflow/registered-models/search", timeout=10)  # noqa: S310
    assert refused.value.code == 401
    os.environ.update(MLFLOW_TRACKING_USERNAME="loopline", MLFLOW_TRACKING_PASSWORD=cluster.secrets["MLFLOW_PASSWORD"])
    try:
        champion = MlflowClient(cfg.mlflow.tracking_uri).get_model_version_by_alias(
            cfg.mlflow.registered_model, "champion"
        )
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    assert int(champion.version) == 1
