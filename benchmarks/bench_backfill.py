"""Range backfill (`backfill_range`) against the day-by-day backfill (`airflow backfill create` of
`feature_pipeline`), on the same generated data, through the same real stack, in the same run.

For each scale (``--days`` x ``--rows``, and the overhead-bound ``--small-days`` x ``--small-rows``) the landing
drops are generated once; then the range backfill publishes the days (one ``loopline backfill`` run) and the
day-by-day backfill publishes the same days again (one ``feature_pipeline`` run per day, two active at once as
the demo runs them; completed days reprocessed). The range runs first, so the Spark server's JIT warm-up
counts against it. Each phase samples, every second, the resident memory of the Spark Connect server and of
the Airflow worker processes (task processes, their supervisors, the executor's forkserver): the peaks are
reported. Both phases must publish every day; the published feature partitions of both are compared.

    .venv/bin/python benchmarks/bench_backfill.py [--days 90] [--rows 200000] [--small-days 30] [--small-rows 1000]

The issue's scale (the defaults) takes well over an hour on two cores (the day-by-day side alone); pass smaller
``--days`` / ``--small-days`` to fit a time budget: the results file records the scale actually run. Results go
to ``benchmarks/results/backfill.json`` (machine, cores, date, per scale: seconds, ratio, rows/s, peaks).
Everything runs in a throwaway LOOPLINE_HOME with ports of its own; nothing else should run beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from bench_feature_pipeline import free_port  # the sibling benchmark's helper

RESULTS = Path(__file__).parent / "results" / "backfill.json"
WORKER_MARKERS = ("airflow worker", "airflow supervisor", "LocalExecutor", "multiprocessing.forkserver", "task run")


class PeakSampler(threading.Thread):
    """Every second: resident memory of the Spark Connect server and of the Airflow worker processes (sum)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.spark_peak = 0
        self.worker_peak = 0

    def run(self) -> None:
        while not self.stop.is_set():
            spark = worker = 0
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                rss = proc.info["memory_info"].rss if proc.info["memory_info"] else 0
                if "SparkConnectServer" in cmd:
                    spark += rss
                elif any(marker in cmd for marker in WORKER_MARKERS):
                    worker += rss
            self.spark_peak, self.worker_peak = max(self.spark_peak, spark), max(self.worker_peak, worker)
            self.stop.wait(1.0)


def phase(call) -> dict:
    sampler = PeakSampler()
    sampler.start()
    started = time.monotonic()
    try:
        detail = call()
    finally:
        sampler.stop.set()
        sampler.join()
    return {
        "seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb_spark_server": round(sampler.spark_peak / 2**20),
        "peak_rss_mb_airflow_workers": round(sampler.worker_peak / 2**20),
        **detail,
    }


def run_range(env: dict[str, str], start: dt.date, end: dt.date) -> dict:
    from loopline import backfill, stack
    from loopline.config import load_config

    api = stack.AirflowApi.for_env(env)
    run_id = backfill.request_range(api, start, end, load_config(environ=env))
    while True:
        state = next((r.get("state") for r in api.dag_runs(backfill.DAG_ID) if r["run_id"] == run_id), None)
        if state in ("success", "failed"):
            break
        time.sleep(2)
    if state != "success":
        raise RuntimeError(f"range backfill {run_id} ended {state}")
    return {"runs": 1}


def run_daily(env: dict[str, str], start: dt.date, end: dt.date) -> dict:
    from loopline import demo

    # Airflow queues no task of a paused DAG, backfill runs included (the demo unpauses it too); its one
    # scheduled run (the latest day, no drop) waits in the triggerer.
    demo._api(env).unpause("feature_pipeline")
    states = demo.backfill("feature_pipeline", start, end, env, echo=lambda line: None)
    if states.get("success", 0) != (end - start).days + 1:
        raise RuntimeError(f"day-by-day backfill ended {states}")
    return {"runs": states.get("success", 0)}


def features_snapshot(lake: Path, days: list[dt.date]) -> dict[str, object]:
    import pandas as pd

    from loopline import lake as tables
    from loopline.lake import Lake

    store, out = Lake(str(lake)), {}
    for day in days:
        frame = pd.read_parquet(store.partition(tables.FEATURES, day))
        out[str(day)] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def bench_scale(
    env: dict[str, str], landing: Path, lake: Path, start: dt.date, days: int, rows: int, daily_first: bool = False
) -> dict:
    from loopline import lake as tables
    from loopline.synth import generate

    end = start + dt.timedelta(days=days - 1)
    print(f"[scale {days} x {rows}] generating {start} .. {end}", flush=True)
    generate(start, days, landing, transactions_per_day=rows, seed=17)
    span = tables.day_range(start, end)
    if daily_first:
        daily = phase(lambda: run_daily(env, start, end))
        after_daily = features_snapshot(lake, span)
        print(f"[scale {days} x {rows}] day-by-day backfill: {daily}", flush=True)
    ranged = phase(lambda: run_range(env, start, end))
    after_range = features_snapshot(lake, span)
    print(f"[scale {days} x {rows}] range backfill: {ranged}", flush=True)
    if not daily_first:
        daily = phase(lambda: run_daily(env, start, end))
        after_daily = features_snapshot(lake, span)
        print(f"[scale {days} x {rows}] day-by-day backfill: {daily}", flush=True)
    same = all(after_range[d].equals(after_daily[d]) for d in after_range)
    total = days * rows
    return {
        "days": days,
        "rows_per_day": rows,
        "range_backfill": {**ranged, "rows_per_s": round(total / ranged["seconds"], 1)},
        "day_by_day": {**daily, "rows_per_s": round(total / daily["seconds"], 1)},
        "ratio_day_by_day_over_range": round(daily["seconds"] / ranged["seconds"], 2),
        "features_identical": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--small-days", type=int, default=30)
    parser.add_argument("--small-rows", type=int, default=1_000)
    parser.add_argument("--daily-first", action="store_true", help="run the day-by-day backfill first")
    parser.add_argument(
        "--warmup", action="store_true", help="first run one day through each path (not measured), on days of their own"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running and the home in place")
    args = parser.parse_args()
    # A timeout's SIGTERM still stops the stack (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    root = Path(tempfile.mkdtemp(prefix="loopline-bench-backfill-"))
    root.chmod(0o755)  # the embedded PostgreSQL runs as its own system user
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOOPLINE", "MLFLOW"))}
    env.update(
        LOOPLINE_HOME=str(root / "home"),
        LOOPLINE_AIRFLOW_PORT=str(free_port()),
        LOOPLINE_POSTGRES_PORT=str(free_port()),
        LOOPLINE__SPARK__CONNECT_URL=f"sc://127.0.0.1:{free_port()}",
        LOOPLINE__MLFLOW__UI_URL=f"http://127.0.0.1:{free_port()}",
        LOOPLINE__TRAINING__SCHEDULE="null",
        PYTHONUNBUFFERED="1",
    )
    os.environ.update(env)  # this process reads the same configuration (landing, lake) as the stack
    from loopline import stack
    from loopline.config import get_config, resolve_uri

    get_config.cache_clear()
    loopline = str(Path(sys.executable).parent / "loopline")
    results: dict = {
        "benchmark": "bench_backfill",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "note": "range backfill (one backfill_range run) vs airflow backfill create of feature_pipeline, "
        f"same data, same stack, {'day-by-day' if args.daily_first else 'range'} first"
        + (", after a warm-up day through each path" if args.warmup else ", no warm-up"),
        "scales": [],
    }
    if RESULTS.exists():  # earlier runs stay in the file, newest last
        earlier = json.loads(RESULTS.read_text())
        results["earlier_runs"] = [*earlier.pop("earlier_runs", []), earlier]
    try:
        started = time.monotonic()
        up = subprocess.run([loopline, "up"], env=env, capture_output=True, text=True, check=False)
        if up.returncode != 0:
            raise RuntimeError(f"loopline up failed:\n{up.stdout[-3000:]}{up.stderr[-3000:]}")
        print(f"[stack] up in {time.monotonic() - started:.0f} s", flush=True)
        env = stack.shell_environment(root / "home", env)
        from loopline import demo

        demo.wait_for_dags(["feature_pipeline", "backfill_range"], env)
        cfg = get_config()
        results["chunking"] = cfg.backfill.model_dump(include={"chunk_days", "chunk_rows", "max_chunk_days"})
        landing, lake = Path(resolve_uri(cfg.storage.landing_uri)), Path(resolve_uri(cfg.storage.lake_uri))
        first = dt.date(2026, 1, 1)
        if args.warmup:  # both paths once on days of their own: a fresh stack's first runs pay its warm-up
            from loopline.synth import generate

            warm = dt.date(2025, 6, 1)
            generate(warm, 2, landing, transactions_per_day=args.small_rows, seed=3)
            started_warm = time.monotonic()
            run_range(env, warm, warm)
            run_daily(env, warm + dt.timedelta(days=1), warm + dt.timedelta(days=1))
            results["warmup_seconds"] = round(time.monotonic() - started_warm, 1)
            print(f"[warm-up] {results['warmup_seconds']} s", flush=True)
        for days, rows in ((args.small_days, args.small_rows), (args.days, args.rows)):
            if days <= 0:
                continue
            results["scales"].append(bench_scale(env, landing, lake, first, days, rows, args.daily_first))
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")  # each scale as soon as it is measured
            first += dt.timedelta(days=days + 200)  # a later span: no day reads the previous scale's
        results["total_seconds"] = round(time.monotonic() - started, 1)
    finally:
        if not args.keep:
            subprocess.run([loopline, "down"], env=env, capture_output=True, check=False)
            shutil.rmtree(root, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for scale in results["scales"]:
        ranged, daily = scale["range_backfill"], scale["day_by_day"]
        print(
            f"[result] {scale['days']} days x {scale['rows_per_day']} rows: range {ranged['seconds']} s "
            f"({ranged['rows_per_s']} rows/s) vs day-by-day {daily['seconds']} s ({daily['rows_per_s']} rows/s): "
            f"{scale['ratio_day_by_day_over_range']}x; features identical: {scale['features_identical']}"
        )
    print(f"[result] written to {RESULTS}")


if __name__ == "__main__":
    main()
