"""The local Spark Connect server's settings (``spark.server_conf``) on the demo's small days.

A ``feature_pipeline`` day at the demo's size (5,000 transactions) is a dozen Spark queries over a few
hundred kilobytes, so what a query costs is planning and code generation, not data. For each variant a
fresh server and home: ``--warm-days`` days ingested and featurised to warm the JVM, then ``--days`` days
timed: the ingest, the Arrow read the raw gate validates, the publish, the feature job and the feature
gate's Arrow read (what the DAG's tasks run, without Airflow). Printed per variant: the server's CPU
seconds (JVM, from /proc) and the wall time per day, the ratio against Spark's defaults, and the CPU by
kind of JVM thread (the JIT's C1 and C2 compilers, the query's task threads, garbage collection, the
rest). Variants alternate over ``--rounds`` rounds so that a change in the machine's load hits both.

    .venv/bin/python benchmarks/bench_spark_server.py [--conf spark.sql.codegen.wholeStage=false] [--rows 5000]

``--conf`` (repeatable) is the variant compared with Spark's defaults; without it, the configured
``spark.server_conf``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_feature_pipeline as fp  # the sibling benchmark: its server and helpers
from record import recording

# JVM thread names (15 characters in /proc) by prefix, and what they are
THREAD_KINDS = {
    "C1 CompilerThre": "JIT C1",
    "C2 CompilerThre": "JIT C2",
    "Executor task": "query tasks",
    "GC Thread": "GC",
    "G1 ": "GC",
}


def thread_cpu(pid: int) -> Counter[str]:
    """CPU seconds of a JVM's threads by kind (from /proc/<pid>/task/*/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        kind = next((label for prefix, label in THREAD_KINDS.items() if name.startswith(prefix)), "other")
        total[kind] += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def _jvm(pid: int) -> int:
    import psutil

    root = psutil.Process(pid)
    return next(p.pid for p in (root, *root.children(recursive=True)) if p.name() == "java")


def run_variant(
    name: str, conf: dict[str, str], landing: Path, days: int, warm: int
) -> tuple[list[tuple[float, float]], Counter[str]]:
    """(server CPU s, wall s) of each timed day, on a fresh server with ``conf`` and a fresh lake, and
    the server's CPU seconds by thread kind over the timed days."""
    from pyspark.sql import SparkSession

    from loopline import lake as tables
    from loopline.config import get_config, resolve_uri
    from loopline.lake import Lake
    from spark_jobs import features, ingest

    home = Path(tempfile.mkdtemp(prefix=f"loopline-bench-spark-{name}-"))
    shutil.copytree(landing, home / "landing")
    fp.HOME = home
    os.environ["LOOPLINE_HOME"] = str(home)
    os.environ["LOOPLINE__SPARK__SERVER_CONF"] = json.dumps(conf)
    get_config.cache_clear()
    port = fp.free_port()
    server = fp.start_server(port)
    spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
    cfg = get_config()
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    start = dt.date(2026, 1, 1)
    timed = []
    jvm = _jvm(server.pid)
    threads: Counter[str] = Counter()
    try:
        for offset in range(warm + days):
            day = start + dt.timedelta(days=offset)
            if offset == warm:
                threads = thread_cpu(jvm)
            cpu, began = fp.tree_cpu(server.pid), time.perf_counter()
            ingested = ingest.run(spark, day, cfg)
            lake.arrow_dataset(lake.version_uri(tables.RAW_TRANSACTIONS, day, ingested["version"])).to_table()
            ingest.publish(day, ingested["tables"], cfg=cfg)
            built = features.run(spark, day, cfg)
            lake.arrow_dataset(built["uri"]).to_table()
            if offset >= warm:
                timed.append((fp.tree_cpu(server.pid) - cpu, time.perf_counter() - began))
        threads = thread_cpu(jvm) - threads
    finally:
        spark.stop()
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)
    return timed, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="transactions a day")
    parser.add_argument("--days", type=int, default=4, help="timed days per variant and round")
    parser.add_argument("--warm-days", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a server property")
    args = parser.parse_args()

    from loopline.config import get_config
    from loopline.synth import generate

    variant = dict(item.split("=", 1) for item in args.conf) or dict(get_config().spark.server_conf)
    if not variant:
        parser.error("spark.server_conf is empty: name the properties to compare with --conf KEY=VALUE")
    variants = {"Spark defaults": {}, f"server_conf {variant}": variant}
    landing = Path(tempfile.mkdtemp(prefix="loopline-bench-spark-landing-"))
    generate(dt.date(2026, 1, 1), args.warm_days + args.days, landing, transactions_per_day=args.rows, seed=5)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    by_thread: dict[str, Counter[str]] = {name: Counter() for name in variants}
    try:
        for round_ in range(args.rounds):
            for index, (name, conf) in enumerate(variants.items()):
                days, threads = run_variant(f"v{index}", conf, landing, args.days, args.warm_days)
                results[name] += days
                by_thread[name] += threads
                cpu, wall = (statistics.median(x[k] for x in days) for k in (0, 1))
                print(f"[round {round_ + 1}] {name}: median per day {cpu:.1f} server cpu-s, {wall:.1f} s wall")
    finally:
        shutil.rmtree(landing, ignore_errors=True)
    base_cpu, base_wall = (statistics.median(x[k] for x in results["Spark defaults"]) for k in (0, 1))
    for name, days in results.items():
        cpu, wall = (statistics.median(x[k] for x in days) for k in (0, 1))
        print(
            f"[day] {name}: {args.rows} rows, median over {len(days)} days: server {cpu:.1f} cpu-s "
            f"(ratio {cpu / base_cpu:.2f}), wall {wall:.1f} s (ratio {wall / base_wall:.2f})"
        )
        per_day = {kind: seconds / len(days) for kind, seconds in by_thread[name].most_common()}
        print(f"[threads] {name}: cpu-s per day " + ", ".join(f"{k} {v:.1f}" for k, v in per_day.items()))


if __name__ == "__main__":
    with recording("spark_server", note="a Spark Connect server property vs Spark's defaults on small days"):
        main()
