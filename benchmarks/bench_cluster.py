"""One feature_pipeline day at production volume: embedded Spark (local[*]) against the cluster profile's
Spark standalone cluster, with one and with two workers.

Each configuration gets its own Spark Connect server (and, for the cluster, a master and its workers started
exactly as ``loopline up --profile cluster`` starts them), its own fresh lake and the same landing drop: a
warm-up day first (executors started, classes loaded, the JIT warm), then the measured day, whose Spark stages
(ingest, publish raw, feature job, publish features) are timed as the tasks run them. The GX gates and
Airflow's own overhead are left out: the gates read the lake with Arrow in the task process, the same in both
profiles. For each run, Spark's REST API gives the task time its executors spent (what ran on executors)
against their cores' wall time (the rest is the driver: planning, scheduling, commits and the client).

    .venv/bin/python benchmarks/bench_cluster.py [--rows 200000] [--home DIR]

Prints each configuration's figures and the ratios, and writes them to ``benchmarks/results/bench_cluster.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "bench_cluster.json"
CONFIGS = {"embedded": 0, "cluster, 1 worker": 1, "cluster, 2 workers": 2}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the benchmark's own servers
        return json.loads(response.read())


class SparkSetup:
    """A Connect server (local[*], or the driver of a standalone master with ``workers`` workers)."""

    def __init__(self, home: Path, workers: int) -> None:
        from loopline import cluster, stack
        from loopline.config import get_config

        self.home, self.workers, self.processes = home, workers, []
        os.environ["LOOPLINE_HOME"] = str(home)
        self.connect_port, self.ui_port = free_port(), free_port()
        os.environ["LOOPLINE__SPARK__CONNECT_URL"] = f"sc://127.0.0.1:{self.connect_port}"
        get_config.cache_clear()
        cfg = get_config()
        env = {
            **os.environ,
            "SPARK_HOME": str(stack.spark_home()),
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PATH": f"{stack.venv_bin()}{os.pathsep}{os.environ['PATH']}",
        }
        self.ports = cluster.Ports(spark_master=free_port(), spark_master_ui=free_port())
        if workers:
            self._spawn("master", cluster.spark_master_command(self.ports), env)
            _wait(lambda: stack.port_open("127.0.0.1", self.ports.spark_master_ui), 120, "the Spark master")
            for name in cluster.SPARK_WORKERS[:workers]:
                self._spawn(name, cluster.spark_worker_command(self.ports, name), env)
            _wait(self._workers_alive, 120, "the Spark workers")
            command = cluster.spark_connect_command(cfg, self.ports)
        else:
            command = stack.spark_command(cfg)
        # The UI (on loopback) serves the REST API the executor figures come from.
        command[command.index("spark.ui.enabled=false")] = "spark.ui.enabled=true"
        command[-1:-1] = ["--conf", f"spark.ui.port={self.ui_port}"]
        self._spawn("connect", command, env)
        _wait(lambda: stack.port_open("127.0.0.1", self.connect_port), 180, "the Spark Connect server")

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.home / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _workers_alive(self) -> bool:
        try:
            status = _get(f"http://127.0.0.1:{self.ports.spark_master_ui}/json/")
        except OSError:
            return False
        return sum(w["state"] == "ALIVE" for w in status["workers"]) >= self.workers

    def executor_seconds(self) -> dict[str, float]:
        """Task seconds so far per executor (``driver`` runs the tasks in local mode)."""
        base = f"http://127.0.0.1:{self.ui_port}/api/v1/applications"
        (app,) = _get(base)
        return {e["id"]: e["totalDuration"] / 1000 for e in _get(f"{base}/{app['id']}/allexecutors")}

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for process in self.processes:
            try:
                root = psutil.Process(process.pid)
                for proc in [root, *root.children(recursive=True)]:
                    times = proc.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> None:
        import signal

        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)


def cluster_cores() -> int:
    from loopline.cluster import SPARK_WORKER_CORES

    return SPARK_WORKER_CORES


def run_day(spark, day: dt.date) -> dict[str, float]:
    """The Spark stages of one feature_pipeline run, in order, timed."""
    from loopline.config import get_config
    from spark_jobs import features, ingest

    cfg = get_config()
    stages = {}
    started = time.perf_counter()
    ingested = ingest.run(spark, day, cfg)
    stages["ingest"] = time.perf_counter() - started
    started = time.perf_counter()
    ingest.publish(day, ingested["tables"], stats={"rows": ingested["transactions"]["rows_written"]}, cfg=cfg)
    stages["publish raw"] = time.perf_counter() - started
    started = time.perf_counter()
    built = features.run(spark, day, cfg)
    stages["features"] = time.perf_counter() - started
    started = time.perf_counter()
    features.publish(day, built["version"], built["rows"], cfg=cfg)
    stages["publish features"] = time.perf_counter() - started
    return stages


def measure(name: str, workers: int, root: Path, landing: Path, start: dt.date) -> dict:
    from pyspark.sql import SparkSession

    home = root / name.replace(", ", "-").replace(" ", "-")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["LOOPLINE__STORAGE__LANDING_URI"] = str(landing)
    os.environ["LOOPLINE__STORAGE__LAKE_URI"] = str(home / "lake")
    setup = SparkSetup(home, workers)
    try:
        spark = SparkSession.builder.remote(f"sc://127.0.0.1:{setup.connect_port}").create()
        run_day(spark, start)  # warm-up day: executors up, JIT warm
        before, cpu_before = setup.executor_seconds(), setup.cpu_seconds()
        stages = run_day(spark, start + dt.timedelta(days=1))
        after, cpu_after = setup.executor_seconds(), setup.cpu_seconds()
        spark.stop()
    finally:
        setup.stop()
    wall = sum(stages.values())
    # Executors only: the driver's entry does not count task time (it tracks the wall clock in both modes), and
    # in local mode the tasks run inside the driver, so the embedded run has no executor figure.
    task = {
        k: round(v - before.get(k, 0.0), 2) for k, v in after.items() if k != "driver" and v - before.get(k, 0.0) > 0
    }
    cores = workers * cluster_cores()
    return {
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "stages": {k: round(v, 2) for k, v in stages.items()},
        "executor_task_seconds": task,
        "executor_share": round(sum(task.values()) / cores / wall, 3) if cores else None,
        "spark_cpu_seconds": round(cpu_after - cpu_before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--home", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    args = parser.parse_args()
    root = args.home or Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    root.mkdir(parents=True, exist_ok=True)
    for name in [n for n in os.environ if n.startswith("LOOPLINE__")]:
        os.environ.pop(name)

    from loopline import synth

    start = dt.date(2026, 3, 1)
    landing = root / "landing"
    if not landing.exists():
        synth.generate(start, 2, landing, transactions_per_day=args.rows, seed=5, compress=True)
    results = {}
    for name, workers in CONFIGS.items():
        results[name] = measure(name, workers, root, landing, start)
        line = results[name]
        share = line["executor_share"]
        busy = f"executors busy {share:.0%} of their cores' time" if share is not None else "tasks in the driver"
        print(
            f"{name:>20}: {line['wall_seconds']:6.1f} s ({args.rows / line['wall_seconds']:,.0f} rows/s), {busy}, "
            f"Spark CPU {line['spark_cpu_seconds']} s; stages {line['stages']}",
            flush=True,
        )
    embedded, one, two = (results[name]["wall_seconds"] for name in CONFIGS)
    ratios = {
        "cluster (2 workers) / embedded": round(two / embedded, 2),
        "2 workers / 1 worker": round(two / one, 2),
    }
    for label, value in ratios.items():
        print(f"{label}: {value:.2f}x wall time")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "bench_cluster",
                "date": dt.date.today().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "rows_per_day": args.rows,
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
