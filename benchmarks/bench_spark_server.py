"""The local Spark Connect server's settings (``spark.server_conf``) on the demo's small days.

A ``feature_pipeline`` day at the demo's size (5,000 transactions) is a dozen Spark queries over a few
hundred kilobytes, so what a query costs is planning and code generation, not data. For each variant a
fresh server and home: ``--warm-days`` days ingested and featurised to warm the JVM, then ``--days`` days
timed: the ingest, the Arrow read the raw gate validates, the publish, the feature job and the feature
gate's read (what the DAG's tasks run, without Airflow). Printed per variant: the server's CPU seconds
(JVM, from /proc) and the wall time per day, and the ratio against Spark's defaults. Variants alternate
over ``--rounds`` rounds so that a change in the machine's load hits both.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_feature_pipeline as fp  # the sibling benchmark: its server and helpers


def run_variant(name: str, conf: dict[str, str], landing: Path, days: int, warm: int) -> list[tuple[float, float]]:
    """(server CPU s, wall s) of each timed day, on a fresh server with ``conf`` and a fresh lake."""
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
    try:
        for offset in range(warm + days):
            day = start + dt.timedelta(days=offset)
            cpu, began = fp.tree_cpu(server.pid), time.perf_counter()
            ingested = ingest.run(spark, day, cfg)
            spark.read.parquet(lake.version_uri(tables.RAW_TRANSACTIONS, day, ingested["version"])).toPandas()
            ingest.publish(day, ingested["tables"], cfg=cfg)
            built = features.run(spark, day, cfg)
            spark.read.parquet(built["uri"]).toPandas()
            if offset >= warm:
                timed.append((fp.tree_cpu(server.pid) - cpu, time.perf_counter() - began))
    finally:
        spark.stop()
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)
    return timed


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
    try:
        for round_ in range(args.rounds):
            for index, (name, conf) in enumerate(variants.items()):
                days = run_variant(f"v{index}", conf, landing, args.days, args.warm_days)
                results[name] += days
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


if __name__ == "__main__":
    main()
