"""feature_pipeline performance on this machine, each figure beside its baseline from the same run.

1. Spark task start-up: a thin Spark Connect client against the warm server vs a cold ``spark-submit``.
2. One day end to end at --rows transactions (ingest, raw gates, publish, features, feature gate, publish)
   with the Spark Connect server warm; rows/s for ingest and features.
3. The per-day feature job with --long-history days of history vs --short-history days (same day size), in
   its steady state: every earlier day is ingested and the previous day's rolling state is committed and
   valid, so the job advances it ("incremental"), as in a daily run or an in-order backfill. That state is
   built once from the daily aggregates (``--featurise-all`` instead featurises every day in order, as the
   DAG would: hours at 200k rows). The long day is then timed again with its state rebuilt from the
   aggregates, and the advanced and rebuilt states are compared row for row.

    .venv/bin/python benchmarks/bench_feature_pipeline.py [--rows 200000] [--long-history 90] [--skip-history]

Prints each figure as a tagged line; ``benchmarks/record.py`` keeps them in ``benchmarks/results/
feature_pipeline.json`` with the date and the machine (the run the file held moves to its earlier runs).

Everything runs in a temporary LOOPLINE_HOME with its own Spark Connect server on a free port. The full run
takes about half an hour on two cores (mostly ingesting 91 days of 200k rows); ``--home DIR`` keeps the home
in DIR and, when DIR already holds an interrupted run with the same arguments, resumes it: the landing is kept
(the generator is deterministic) and days whose raw layer (ingest) or state (feature job) is already committed
are not run again. Timed stages always run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from record import recording

HOME = Path()  # set by main() before anything reads the configuration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (spark-submit's JVM is its child)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def start_server(port: int) -> subprocess.Popen:
    from loopline import stack
    from loopline.config import get_config

    os.environ["LOOPLINE__SPARK__CONNECT_URL"] = f"sc://127.0.0.1:{port}"
    get_config.cache_clear()
    env = {**os.environ, "SPARK_HOME": str(stack.spark_home()), "PYSPARK_PYTHON": sys.executable}
    log = (HOME / "spark.log").open("wb")
    process = subprocess.Popen(stack.spark_command(get_config()), env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if stack.port_open("127.0.0.1", port):
            return process
        time.sleep(0.5)
    raise RuntimeError("Spark Connect server did not start")


def timed(call, *args, **kwargs):
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - started


def bench_startup(url: str) -> None:
    """A task's Spark start-up: new client session + a trivial query, vs spark-submit of the same query."""
    from pyspark.sql import SparkSession

    thin = []
    for _ in range(5):
        started = time.perf_counter()
        session = SparkSession.builder.remote(url).create()
        session.range(1000).count()
        session.stop()
        thin.append(time.perf_counter() - started)
    from loopline import stack

    job = HOME / "trivial.py"
    job.write_text(
        textwrap.dedent(
            """
            from pyspark.sql import SparkSession
            spark = SparkSession.builder.master("local[2]").getOrCreate()
            spark.range(1000).count()
            spark.stop()
            """
        )
    )
    env = {**os.environ, "SPARK_HOME": str(stack.spark_home()), "PYSPARK_PYTHON": sys.executable}
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):  # set by the Connect client in this process
        env.pop(name, None)
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    started = time.perf_counter()
    done = subprocess.run([str(stack.spark_home() / "bin" / "spark-submit"), str(job)], env=env, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"spark-submit failed:\n{done.stderr.decode()[-3000:]}")
    cold = time.perf_counter() - started
    print(
        f"[startup] thin Spark Connect client: median {statistics.median(thin):.2f} s over 5 "
        f"(max {max(thin):.2f} s); cold spark-submit: {cold:.2f} s; ratio {cold / statistics.median(thin):.1f}x"
    )


def _committed(cfg, table: str, day: dt.date) -> bool:
    from loopline.config import resolve_uri
    from loopline.lake import Lake

    return Lake(resolve_uri(cfg.storage.lake_uri)).partition(table, day) is not None


def ingest_day(spark, day, cfg, resume: bool = False) -> dict | None:
    from loopline import lake as tables
    from spark_jobs import ingest

    if resume and _committed(cfg, tables.RAW_TRANSACTIONS, day):
        return None
    result = ingest.run(spark, day, cfg)
    ingest.publish(day, result["tables"], stats={"rows": result["transactions"]["rows_written"]}, cfg=cfg)
    return result


def featurise_day(spark, day, cfg, resume: bool = False) -> dict | None:
    """What the DAG runs after a day's raw layer is published: the feature job, which commits the day's state."""
    from loopline import lake as tables
    from spark_jobs import features

    if resume and _committed(cfg, tables.STATE_CUSTOMER, day):
        return None
    return features.run(spark, day, cfg)


def bench_day(spark, cfg, day: dt.date, rows: int) -> None:
    """The tasks of one feature_pipeline run, in order, timed (Airflow's own overhead excluded)."""
    import pandas as pd

    from loopline import lake as tables
    from loopline.config import resolve_uri
    from loopline.lake import Lake
    from loopline.validation import check_gate
    from spark_jobs import features, ingest

    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    stages = {}
    ingested, stages["ingest"] = timed(ingest.run, spark, day, cfg)
    tx = ingested["transactions"]
    version = ingested["version"]
    stats = pd.DataFrame([{k: tx[k] for k in ("rows_read", "rows_written", "rows_quarantined", "quarantine_rate")}])
    _, stages["gate ingest_stats"] = timed(check_gate, stats, "ingest_stats", ds=str(day))
    raw = spark.read.parquet(lake.version_uri(tables.RAW_TRANSACTIONS, day, version))
    _, stages["gate raw_transactions"] = timed(check_gate, raw, "raw_transactions", ds=str(day))
    labels = spark.read.parquet(lake.version_uri(tables.RAW_LABELS, day, version))
    _, stages["gate raw_labels"] = timed(check_gate, labels, "raw_labels", ds=str(day), params={"min_rows": 0})
    _, stages["publish raw"] = timed(ingest.publish, day, ingested["tables"], cfg=cfg)
    built, stages["features"] = timed(features.run, spark, day, cfg)
    _, stages["gate features"] = timed(check_gate, spark.read.parquet(built["uri"]), "features", ds=str(day))
    _, stages["publish features"] = timed(features.publish, day, built["version"], built["rows"], cfg=cfg)
    total = sum(stages.values())
    for name, seconds in stages.items():
        path = f" (state: {built['state_path']})" if name == "features" else ""
        print(f"[day] {name:>22}: {seconds:6.2f} s{path}")
    print(
        f"[day] one day of feature_pipeline at {rows} rows: {total:.1f} s end to end "
        f"(target < 60 s); ingest {rows / stages['ingest']:,.0f} rows/s, features "
        f"{rows / stages['features']:,.0f} rows/s"
    )


def bench_history(spark, cfg, start: dt.date, short: int, long: int) -> None:
    from loopline import lake as tables
    from loopline.config import resolve_uri
    from loopline.lake import Lake
    from spark_jobs import features

    lake = Lake(resolve_uri(cfg.storage.lake_uri))

    def path_of(runs):
        return "/".join(sorted({result["state_path"] for result, _ in runs}))

    state_tables = (tables.STATE_CUSTOMER, tables.STATE_CUSTOMER_MERCHANTS, tables.STATE_MERCHANT_RISK)

    def state_rows(day):
        return ", ".join(
            f"{table} {spark.read.parquet(lake.partition(table, day)).count():,}" for table in state_tables
        )

    short_day, long_day = start + dt.timedelta(days=short), start + dt.timedelta(days=long)
    # Paired and alternating (short, long, short, long, ...): a load that comes and goes on the machine falls on
    # both sides alike; the ratio is the median of the pairs' ratios.
    short_runs, long_runs = [], []
    for _ in range(5):
        short_runs.append(timed(features.run, spark, short_day, cfg))
        long_runs.append(timed(features.run, spark, long_day, cfg))
    short_t = statistics.median(seconds for _, seconds in short_runs)
    long_t = statistics.median(seconds for _, seconds in long_runs)
    ratio = statistics.median(lt / st for (_, st), (_, lt) in zip(short_runs, long_runs, strict=True))
    print(
        f"[history] feature job with {short} days of history: median {short_t:.2f} s over 5 (state: "
        f"{path_of(short_runs)}); with {long} days: median {long_t:.2f} s (state: {path_of(long_runs)}); "
        f"ratio {ratio:.2f}, median of 5 alternating pairs (target <= 1.3)"
    )
    print(f"[history] state rows with {short} days: {state_rows(short_day)}")
    print(f"[history] state rows with {long} days: {state_rows(long_day)}")
    advanced = {table: lake.partition(table, long_day) for table in state_tables}
    rebuilt, rebuilt_t = timed(features.run, spark, long_day, cfg, rebuild_state=True)
    same = True
    for table in state_tables:
        mine, theirs = spark.read.parquet(advanced[table]), spark.read.parquet(lake.partition(table, long_day))
        same = same and mine.exceptAll(theirs).count() == 0 and theirs.exceptAll(mine).count() == 0
    print(
        f"[history] the same {long}-day job with the state rebuilt from the daily aggregates "
        f"(state: {rebuilt['state_path']}): {rebuilt_t:.2f} s; state advanced day by day == rebuilt state: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--short-history", type=int, default=7)
    parser.add_argument("--long-history", type=int, default=90)
    parser.add_argument("--skip-history", action="store_true", help="only start-up and one day (minutes, not an hour)")
    parser.add_argument(
        "--history-only",
        action="store_true",
        help="with --home of a finished run: time only the history comparison (re-running the one-day stage "
        "would re-ingest a day inside the risk window and make the long day's state stale)",
    )
    parser.add_argument("--home", type=Path, help="keep LOOPLINE_HOME here; resume the run it holds, if any")
    parser.add_argument(
        "--featurise-all",
        action="store_true",
        help="run the feature job on every long-history day in order (hours), not only the day before the timed one",
    )
    args = parser.parse_args()
    global HOME
    if args.home:
        args.home.mkdir(parents=True, exist_ok=True)
    HOME = args.home.resolve() if args.home else Path(tempfile.mkdtemp(prefix="loopline-bench-"))
    os.environ["LOOPLINE_HOME"] = str(HOME)

    from pyspark.sql import SparkSession

    from loopline.config import get_config
    from loopline.synth import generate

    port = free_port()
    server = start_server(port)
    spark = None
    try:
        url = f"sc://127.0.0.1:{port}"
        cfg = get_config()
        spark = SparkSession.builder.remote(url).getOrCreate()
        if not args.history_only:
            bench_startup(url)

        history = args.short_history if args.skip_history else args.long_history
        start = dt.date(2026, 1, 1)
        landing = HOME / "landing"
        last = start + dt.timedelta(days=history)
        resume = args.home is not None and (landing / "labels" / f"ds={last}" / "_SUCCESS").exists()
        if resume:
            print(f"[setup] resuming the run in {HOME}: its landing and the days already done are kept")
        else:
            _, seconds = timed(generate, start, history + 1, landing, transactions_per_day=args.rows, seed=5)
            print(f"[setup] generated {history + 1} days x {args.rows} rows in {seconds:.0f} s")
        # Days run in order through ingest and the feature job, as the DAG runs them (backfills included): each
        # feature run commits its day's state, which the next day advances.
        started = time.perf_counter()
        for offset in range(args.short_history):
            ingest_day(spark, start + dt.timedelta(days=offset), cfg, resume)
            featurise_day(spark, start + dt.timedelta(days=offset), cfg, resume)
        if not args.history_only:
            bench_day(spark, cfg, start + dt.timedelta(days=args.short_history), args.rows)
        if not args.skip_history:
            for offset in range(args.short_history + 1, args.long_history + 1):
                ingest_day(spark, start + dt.timedelta(days=offset), cfg, resume)
                if args.featurise_all and offset < args.long_history:
                    featurise_day(spark, start + dt.timedelta(days=offset), cfg, resume)
            if not args.featurise_all:
                # The timed day only needs the previous day's committed state: build it once from the daily
                # aggregates (the same state advancing every day yields: bench_history checks that).
                featurise_day(spark, start + dt.timedelta(days=args.long_history - 1), cfg, resume)
            print(
                f"[setup] ingested {args.long_history + 1} days and committed the feature state of day "
                f"{args.long_history - 1} ("
                + ("every day featurised in order" if args.featurise_all else "built from the aggregates")
                + ") "
                f"in {time.perf_counter() - started:.0f} s"
                + (" (this session: the rest was done by the interrupted one)" if resume else "")
            )
            bench_history(spark, cfg, start, args.short_history, args.long_history)
        print(json.dumps({"rows": args.rows, "home": str(HOME)}))
    finally:
        if spark is not None:
            spark.stop()  # releases the client's gRPC channel: without it the process hangs at exit
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    with recording(
        "feature_pipeline",
        note="Spark task start-up, one feature_pipeline day end to end, the feature job with long vs short history",
    ):
        main()
