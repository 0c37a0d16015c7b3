"""`make demo`'s time and where its CPU goes, in a throwaway home on ports of its own.

Runs ``loopline demo`` (the whole loop through the real scheduler, as `make demo` does) and samples every
process's CPU time each second, grouped by component: the Spark Connect server, the Airflow task processes,
the scheduler, the API server, the dag-processor, the triggerer, PostgreSQL, MLflow, the demo's own driver
and the ``airflow`` CLI processes it starts. On two cores the backfill is CPU-bound, so "where do the CPU
seconds of a backfilled day go" is what decides the demo's time. Printed at the end:

- the demo's own timings (whole demo, feature backfill) and its exit code;
- CPU seconds by component over the feature backfill, per backfilled day, and over the whole demo, against
  the machine's busy time (processes that start and end between two samples show as "not attributed");
- what the demo's progress polling costs: one ``airflow dags list-runs`` CLI process against one REST call
  for the same runs (client plus API-server CPU), median of 3 each: the baseline the demo used before.

    .venv/bin/python benchmarks/bench_demo.py [--drift-kind covariate] [--keep]

About 40 minutes on two cores. Nothing else should run beside it if the figures are to mean anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from bench_feature_pipeline import free_port, tree_cpu  # the sibling benchmark's helpers
from record import recording

CATEGORIES = (  # first match wins
    ("spark (JVM)", ("SparkConnectServer",)),
    ("airflow tasks", ("airflow worker", "airflow supervisor", "LocalExecutor", "multiprocessing.forkserver")),
    ("scheduler", ("airflow scheduler",)),
    ("api-server", ("api_server", "api-server")),
    ("dag-processor", ("dag-processor", "dag_processor")),
    ("triggerer", ("airflow triggerer",)),
    ("postgres", ("postgres",)),
    ("mlflow", ("mlflow", "huey", "uvicorn", "gunicorn")),
    ("demo: airflow CLI", ("bin/airflow ",)),
    ("demo driver", ("loopline demo",)),
)


def category(cmdline: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in cmdline for needle in needles):
            return name
    return "other"


def machine_busy() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class CpuSampler(threading.Thread):
    """Every second: each process's CPU time, kept per PID, so exited processes keep their last sample."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen: dict[tuple[int, float], tuple[str, float]] = {}  # (pid, create_time) -> (category, cpu-s)
        self.baseline: dict[tuple[int, float], float] = {}  # CPU a process had already used at the first sample
        self.first = True

    def sample(self) -> None:
        current = {}
        for proc in psutil.process_iter(["pid", "create_time", "cmdline", "cpu_times"]):
            info = proc.info
            if info["cpu_times"] is None:
                continue
            key = (info["pid"], info["create_time"])
            cpu = info["cpu_times"].user + info["cpu_times"].system
            current[key] = (category(" ".join(info["cmdline"] or [])), cpu)
        with self.lock:
            if self.first:
                self.baseline = {key: cpu for key, (_, cpu) in current.items()}
                self.first = False
            self.seen.update(current)

    def totals(self) -> Counter[str]:
        with self.lock:
            out: Counter[str] = Counter()
            for key, (name, cpu) in self.seen.items():
                out[name] += cpu - self.baseline.get(key, 0.0)
            return out

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def print_table(title: str, totals: Counter[str], busy: float, seconds: float, per: int | None = None) -> None:
    attributed = sum(totals.values())
    print(f"[cpu] {title}: {seconds / 60:.1f} min wall, machine busy {busy:,.0f} cpu-s ({busy / seconds:.2f} cores)")
    rows = [*totals.most_common(), ("not attributed (exited between samples)", max(busy - attributed, 0.0))]
    for name, cpu in rows:
        extra = f", {cpu / per:6.1f} cpu-s per day" if per else ""
        print(f"[cpu]   {name:>40}: {cpu:8.0f} cpu-s ({cpu / busy:5.1%}){extra}")


def poll_costs(env: dict[str, str], api_server_pid: int | None) -> None:
    """One status poll of the feature_pipeline runs: the airflow CLI (the old demo) vs the REST API."""
    from loopline import stack

    api = stack.AirflowApi.for_env(env)
    api.dag_runs("feature_pipeline")  # log in once, as the demo does

    def server_cpu() -> float:
        return tree_cpu(api_server_pid) if api_server_pid else 0.0

    cli, rest = [], []
    for _ in range(3):
        before, s0 = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu()
        started = time.perf_counter()
        stack.airflow_cli(["dags", "list-runs", "feature_pipeline", "-o", "json"], env, check=False)
        wall = time.perf_counter() - started
        after, s1 = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu()
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        cli.append((cpu + s1 - s0, wall))
        c0, s0 = time.process_time(), server_cpu()
        started = time.perf_counter()
        runs = api.dag_runs("feature_pipeline")
        rest.append((time.process_time() - c0 + server_cpu() - s0, time.perf_counter() - started))
    cli_cpu, rest_cpu = (statistics.median(c for c, _ in x) for x in (cli, rest))
    cli_wall, rest_wall = (statistics.median(w for _, w in x) for x in (cli, rest))
    print(
        f"[poll] one status poll of {len(runs)} runs: airflow CLI {cli_cpu:.2f} cpu-s ({cli_wall:.2f} s wall) vs "
        f"REST {rest_cpu:.3f} cpu-s ({rest_wall:.3f} s wall), client + API server; "
        f"ratio {cli_cpu / max(rest_cpu, 1e-3):.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drift-kind", default="covariate")
    parser.add_argument("--keep", action="store_true", help="leave the stack running and the home in place")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="loopline-bench-demo-"))
    root.chmod(0o755)  # the embedded PostgreSQL runs as its own system user
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOOPLINE", "MLFLOW"))}
    env.update(
        LOOPLINE_HOME=str(root / "home"),
        LOOPLINE_AIRFLOW_PORT=str(free_port()),
        LOOPLINE__SPARK__CONNECT_URL=f"sc://127.0.0.1:{free_port()}",
        LOOPLINE__MLFLOW__UI_URL=f"http://127.0.0.1:{free_port()}",
        PYTHONUNBUFFERED="1",
    )
    loopline = str(Path(sys.executable).parent / "loopline")
    sampler = CpuSampler()
    sampler.start()
    marks: dict[str, tuple[float, float, Counter[str]]] = {}

    def mark(name: str) -> None:
        marks[name] = (time.monotonic(), machine_busy(), sampler.totals())

    mark("start")
    backfill_days = 0
    demo = subprocess.Popen(
        [loopline, "demo", "--drift-kind", args.drift_kind],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in demo.stdout:  # type: ignore[union-attr]
        print(f"[demo {(time.monotonic() - marks['start'][0]) / 60:5.1f}] {line}", end="")
        if line.startswith("== backfilling feature_pipeline"):
            mark("backfill")
            first, last = (dt.date.fromisoformat(d) for d in re.findall(r"\d{4}-\d{2}-\d{2}", line)[:2])
            backfill_days = (last - first).days + 1
        elif line.startswith("== training the first champion"):
            mark("trained")
    code = demo.wait()
    mark("end")
    sampler.stop.set()
    sampler.join()

    print(f"[demo] exit code {code}")
    if "backfill" in marks and "trained" in marks:
        (t0, b0, c0), (t1, b1, c1) = marks["backfill"], marks["trained"]
        print_table(
            f"feature_pipeline backfill ({backfill_days} days) and yesterday's run",
            c1 - c0, b1 - b0, t1 - t0, per=backfill_days + 1,
        )  # fmt: skip
    (t0, b0, c0), (t1, b1, c1) = marks["start"], marks["end"]
    print_table("the whole demo", c1 - c0, b1 - b0, t1 - t0)

    from loopline import stack

    pid_file = root / "home" / "stack" / "airflow-api-server.pid"
    api_pid = json.loads(pid_file.read_text())["pid"] if pid_file.exists() else None
    try:
        poll_costs(stack.shell_environment(root / "home", env), api_pid)
    finally:
        if not args.keep:
            subprocess.run([loopline, "down"], env=env, capture_output=True, check=False)
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"[demo] stack left running in {root}")


if __name__ == "__main__":
    with recording(
        "demo",
        note="make demo in a throwaway home: time, CPU seconds by component, status polls",
        keep=lambda line: (
            line.startswith(("[cpu]", "[poll]"))
            or (line.startswith("[demo") and ("min" in line or "AUC" in line or "champion" in line))
        ),
    ):
        main()
