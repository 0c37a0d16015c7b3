"""Load: a 90-day backfill of feature_pipeline through the real scheduler while it runs the other DAGs.

In a throwaway home, on ports of its own, through the local stack (``loopline up``):

1. ``--days`` days of landing drops ending yesterday (``--rows`` transactions a day);
2. ``airflow backfill create`` for ``feature_pipeline`` over all of them but yesterday, which the scheduler
   runs itself (the DAG is unpaused, as in production);
3. once the features of the cut-off day (``--cutoff-day``) are published, ``train_model`` trains the first
   champion (``airflow dags test``, a real run in the stack's database, beside the scheduler's work);
4. once a champion exists: ``batch_score`` backfilled over every day after the cut-off and ``drift_monitor``
   over the last ``--drift-nights`` nights, while the feature backfill goes on (their sensors defer until the
   days they need are published);
5. until every run has finished.

Sampled every 2 s while it runs: task instances running per pool against the pool's slots and in all, the
Airflow API's health-check latency (how responsive the UI stays), the load average and available memory.
Printed at the end: wall time, runs per DAG and state, failed and retried task instances, the maxima per
pool, the API latency p50/p95/max, load and memory. "Completes without failed tasks, deadlocks or
oversubscription, and the machine stays responsive" is each of those figures.

    .venv/bin/python benchmarks/bench_load.py [--days 90] [--rows 1000] [--cutoff-day 45] [--drift-nights 7]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from record import recording


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler(threading.Thread):
    """Samples the scheduler's load and the machine every ``interval`` seconds until stopped."""

    def __init__(self, pg_host: str, api: str, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.pg_host, self.api, self.interval = pg_host, api, interval
        self.stop = threading.Event()
        self.running_max: Counter[str] = Counter()
        self.running_total_max = 0
        self.latencies: list[float] = []
        self.api_errors = 0
        self.loads: list[float] = []
        self.available_min = float("inf")
        self.samples = 0

    def run(self) -> None:
        import psutil
        import psycopg2

        conn = psycopg2.connect(dbname="airflow", user="postgres", host=self.pg_host)
        conn.autocommit = True
        try:
            while not self.stop.wait(self.interval):
                with conn.cursor() as cur:
                    cur.execute("SELECT pool, count(*) FROM task_instance WHERE state = 'running' GROUP BY pool")
                    running = dict(cur.fetchall())
                for pool, n in running.items():
                    self.running_max[pool] = max(self.running_max[pool], n)
                self.running_total_max = max(self.running_total_max, sum(running.values()))
                began = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"{self.api}/api/v2/monitor/health", timeout=30) as response:  # noqa: S310
                        response.read()
                    self.latencies.append(time.perf_counter() - began)
                except OSError:
                    self.api_errors += 1
                self.loads.append(os.getloadavg()[0])
                self.available_min = min(self.available_min, psutil.virtual_memory().available)
                self.samples += 1
        finally:
            conn.close()


def run_states(pg_host: str) -> dict[str, dict[dt.date, str]]:
    import psycopg2

    with (
        contextlib.closing(psycopg2.connect(dbname="airflow", user="postgres", host=pg_host)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT dag_id, logical_date::date, state FROM dag_run WHERE logical_date IS NOT NULL")
        out: dict[str, dict[dt.date, str]] = {}
        for dag_id, day, state in cur.fetchall():
            out.setdefault(dag_id, {})[day] = state
        return out


def task_report(pg_host: str) -> tuple[list[tuple], list[tuple], dict[str, int]]:
    """Failed task instances, retried ones (attempts kept in task_instance_history) and the pools' slots."""
    import psycopg2

    with (
        contextlib.closing(psycopg2.connect(dbname="airflow", user="postgres", host=pg_host)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            "SELECT dag_id, task_id, count(*) FROM task_instance WHERE state = %s GROUP BY 1, 2 ORDER BY 1, 2",
            ["failed"],
        )
        failed = cur.fetchall()
        cur.execute("SELECT dag_id, task_id, count(*) FROM task_instance_history GROUP BY 1, 2 ORDER BY 1, 2")
        retried = cur.fetchall()
        cur.execute("SELECT pool, slots FROM slot_pool")
        slots = dict(cur.fetchall())
    return failed, retried, slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rows", type=int, default=1000, help="transactions a day")
    parser.add_argument("--cutoff-day", type=int, default=45, help="the first champion's cut-off, as a day index")
    parser.add_argument("--drift-nights", type=int, default=7)
    parser.add_argument("--timeout-minutes", type=float, default=240)
    parser.add_argument("--keep", action="store_true", help="leave the stack running and the home in place")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="loopline-bench-load-"))
    home.chmod(0o755)  # the embedded PostgreSQL runs as its own system user
    ports = {"airflow": free_port(), "spark": free_port(), "mlflow": free_port()}
    for name in [n for n in os.environ if n.startswith(("AIRFLOW", "LOOPLINE"))]:
        os.environ.pop(name)
    os.environ.update(
        LOOPLINE_HOME=str(home / "home"),
        LOOPLINE_AIRFLOW_PORT=str(ports["airflow"]),
        LOOPLINE__SPARK__CONNECT_URL=f"sc://127.0.0.1:{ports['spark']}",
        LOOPLINE__MLFLOW__UI_URL=f"http://127.0.0.1:{ports['mlflow']}",
    )
    from loopline import demo, stack, synth
    from loopline import lake as tables
    from loopline.config import get_config, resolve_uri
    from loopline.lake import Lake

    cfg = get_config()
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    start = yesterday - dt.timedelta(days=args.days - 1)
    cutoff = start + dt.timedelta(days=args.cutoff_day)
    scored = tables.day_range(cutoff + dt.timedelta(days=1), yesterday)
    nights = scored[-args.drift_nights :]
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    sampler = None
    began = time.monotonic()
    try:
        stack.up(cfg, echo=lambda line: print(f"[up] {line}"))
        pg_host = stack.embedded_pg_host()
        env = stack.stack_environment(cfg, stack.embedded_pg())
        synth.generate(start, args.days, Path(resolve_uri(cfg.storage.landing_uri)), transactions_per_day=args.rows)
        demo.wait_for_dags(["feature_pipeline", "batch_score", "drift_monitor", "train_model"], env)
        for dag_id in ("feature_pipeline", "batch_score", "drift_monitor"):
            stack.airflow_cli(["dags", "unpause", dag_id], env, check=False)
        sampler = Sampler(pg_host, f"http://127.0.0.1:{ports['airflow']}")
        sampler.start()
        load_began = time.monotonic()
        demo.create_backfill("feature_pipeline", start, yesterday - dt.timedelta(days=1), env)
        before = yesterday - dt.timedelta(days=1)
        print(f"[load] feature_pipeline backfill {start} .. {before} created; {yesterday} by the scheduler itself")

        trainer: subprocess.Popen | None = None
        scoring_started = False
        expected = {
            "feature_pipeline": tables.day_range(start, yesterday),
            "batch_score": scored,
            "drift_monitor": nights,
        }
        deadline = load_began + args.timeout_minutes * 60
        last = ""
        while time.monotonic() < deadline:
            time.sleep(10)
            if trainer is None and lake.partition(tables.FEATURES, cutoff):
                conf = json.dumps({"cutoff": str(cutoff), "reason": "load benchmark: first champion"})
                trainer = subprocess.Popen(
                    [str(stack.venv_bin() / "airflow"), "dags", "test", "train_model", str(cutoff), "-c", conf],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                print(f"[load] {(time.monotonic() - load_began) / 60:5.1f} min: train_model for cut-off {cutoff}")
            if trainer is not None and not scoring_started and trainer.poll() is not None:
                if demo.champion(cfg) is None:
                    raise RuntimeError(f"train_model made no champion (exit {trainer.returncode}): see its logs")
                demo.create_backfill("batch_score", scored[0], scored[-2], env)
                demo.create_backfill("drift_monitor", nights[0], nights[-2], env)
                scoring_started = True
                print(
                    f"[load] {(time.monotonic() - load_began) / 60:5.1f} min: champion v{demo.champion(cfg)[1]}; "
                    f"batch_score {scored[0]} .. {scored[-2]} and drift_monitor {nights[0]} .. {nights[-2]} "
                    "backfills created"
                )
            states = run_states(pg_host)
            done = {
                dag_id: sum(states.get(dag_id, {}).get(day) in ("success", "failed") for day in days)
                for dag_id, days in expected.items()
            }
            line = ", ".join(f"{dag_id} {n}/{len(expected[dag_id])}" for dag_id, n in done.items())
            if line != last:
                print(f"[load] {(time.monotonic() - load_began) / 60:5.1f} min: finished runs: {line}")
                last = line
            if scoring_started and all(done[d] == len(days) for d, days in expected.items()):
                break
        else:
            print(f"[load] TIMEOUT after {args.timeout_minutes} min: the backfills did not finish (deadlock?)")
        wall = time.monotonic() - load_began
        sampler.stop.set()
        sampler.join(30)

        states = run_states(pg_host)
        failed, retried, slots = task_report(pg_host)
        print(f"\n[load] {args.days} days x {args.rows:,} transactions; wall {wall / 60:.1f} min "
              f"(stack up and data generation before that: {(load_began - began) / 60:.1f} min)")  # fmt: skip
        for dag_id, days in expected.items():
            counts = Counter(states.get(dag_id, {}).get(day, "missing") for day in days)
            print(f"[load] {dag_id:>17}: {dict(counts)} of {len(days)} days")
        print(f"[load] failed task instances: {failed or 'none'}")
        print(f"[load] retried task instances (earlier attempts): {retried or 'none'}")
        for pool, peak in sorted(sampler.running_max.items()):
            print(f"[load] pool {pool}: at most {peak} running (slots {slots.get(pool, '?')})")
        print(f"[load] at most {sampler.running_total_max} task instances running at once "
              f"(parallelism {stack.parallelism()})")  # fmt: skip
        if sampler.latencies:
            lat = sorted(sampler.latencies)
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            print(
                f"[load] API health check over {len(lat)} samples: p50 {statistics.median(lat) * 1000:.0f} ms, "
                f"p95 {p95 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; errors/timeouts {sampler.api_errors}"
            )
        if sampler.loads:
            print(
                f"[load] load average (1 min) median {statistics.median(sampler.loads):.1f}, "
                f"max {max(sampler.loads):.1f} on {os.cpu_count()} cores; "
                f"least available memory {sampler.available_min / 2**30:.1f} GiB"
            )
    finally:
        if sampler is not None:
            sampler.stop.set()
        if not args.keep:
            stack.down(echo=lambda line: None)
            print(f"[load] stack stopped; home left at {home}")


if __name__ == "__main__":
    with recording(
        "load", note="a feature_pipeline backfill through the real scheduler with the other DAGs running beside it"
    ):
        main()
