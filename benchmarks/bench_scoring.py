"""batch_score performance on this machine, each figure beside its baseline from the same run.

1. Scoring throughput: the Spark job (Arrow batches through ``mapInPandas``, model loaded once per worker)
   on --rows feature rows vs XGBoost ``inplace_predict`` in this process on the same rows (target >= 50%).
2. Postgres load: ``load_day`` (delete the day + COPY through the driver + count check + run row, one
   transaction) vs ``psql \\copy`` of the same rows from a CSV file into the same table (target >= 70%).
3. One day of --day-rows transactions scored, explained (exact TreeSHAP for flagged rows) and loaded,
   with the Spark Connect server warm (target < 30 s).

    .venv/bin/python benchmarks/bench_scoring.py [--rows 2000000] [--day-rows 200000]

Everything runs in a temporary LOOPLINE_HOME with its own Spark Connect server and an embedded Postgres.
The model is XGBoost with 300 trees of depth 6, trained on synthetic features.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_feature_pipeline
from bench_feature_pipeline import free_port, start_server, timed
from record import recording

# Its own temporary home (the feature benchmark sets its HOME only in its main()).
HOME = Path(tempfile.mkdtemp(prefix="loopline-bench-scoring-"))
bench_feature_pipeline.HOME = HOME
os.environ["LOOPLINE_HOME"] = str(HOME)

DAY = dt.date(2026, 1, 20)


def build_model():
    import numpy as np
    import pandas as pd

    from loopline.training.models import TrainParams, train_model
    from loopline.training.synthetic import synthetic_day

    days = [synthetic_day(dt.date(2026, 1, 1) + dt.timedelta(days=i), 10_000, 3) for i in range(10)]
    features = pd.concat([frame for frame, _ in days], ignore_index=True)
    probability = np.concatenate([p for _, p in days])
    labels = (np.random.default_rng(3).random(len(probability)) < probability).astype(int)
    split = int(len(features) * 0.8)
    params = TrainParams(max_rounds=300, early_stopping_rounds=300, max_depth=6)
    model = train_model("xgboost", features[:split], labels[:split], features[split:], labels[split:], params, "cpu")
    model.fit_info.best_iteration = model.booster.num_boosted_rounds() - 1  # score with all 300 trees
    buffer = io.BytesIO()
    folder = model.save(HOME / "model")
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    return model, buffer.getvalue()


def write_features(lake, day: dt.date, rows: int, seed: int) -> None:
    """``rows`` synthetic feature rows committed as one day's partition (unique transaction ids)."""
    import pandas as pd

    from loopline import lake as tables
    from loopline.training.synthetic import synthetic_day, write_partition

    parts = []
    for index in range(0, rows, 200_000):
        frame, _ = synthetic_day(day, min(200_000, rows - index), seed + index)
        frame["transaction_id"] = [f"{day}-{index + i}" for i in range(len(frame))]
        parts.append(frame)
    # several files, as the Spark feature job writes them, so the scoring job can use every core
    write_partition(lake, tables.FEATURES, day, pd.concat(parts, ignore_index=True), files=8)


def bench_throughput(spark, lake, model, blob, rows: int) -> None:
    import pandas as pd

    from loopline import lake as tables
    from spark_jobs.score import score_features

    day = DAY + dt.timedelta(days=1)
    write_features(lake, day, rows, seed=100)
    uri = lake.partition(tables.FEATURES, day)
    frame = pd.read_parquet(uri)
    prepared = model.preprocessor.xgboost_frame(frame)
    best = model.fit_info.best_iteration
    model.booster.set_param({"nthread": 0})
    inplace = statistics.median(
        timed(model.booster.inplace_predict, prepared, iteration_range=(0, best + 1))[1] for _ in range(3)
    )
    whole = timed(model.predict_proba, frame)[1]

    def spark_pass():
        scored = score_features(spark.read.parquet(uri), blob, threshold=0.2, explain="none", reason_codes=0)
        scored.write.format("noop").mode("overwrite").save()

    spark_pass()  # warm: Python workers started, model loaded in each
    spark_t = statistics.median(timed(spark_pass)[1] for _ in range(3))
    print(
        f"[throughput] {rows:,} rows: in-process inplace_predict {rows / inplace:,.0f} rows/s ({inplace:.2f} s; "
        f"with preprocessing {rows / whole:,.0f} rows/s); Spark job (read Parquet, Arrow batches, score) "
        f"{rows / spark_t:,.0f} rows/s ({spark_t:.2f} s); ratio {inplace / spark_t:.2f} (target >= 0.5)"
    )


def start_postgres():
    import pgserver
    import psycopg

    server = pgserver.get_server(HOME / "pgdata", cleanup_mode="stop")
    socket_dir = str(server.get_postmaster_info().socket_dir)
    conn = psycopg.connect(host=socket_dir, user="postgres", dbname="postgres")
    return server, conn, socket_dir


def bench_load(conn, socket_dir: str, scores_table) -> float:
    import pgserver

    from loopline import db
    from loopline.score_load import LOAD_COLUMNS, ScoringRun, csv_chunks, load_day

    db.migrate(conn, "bench")
    csv_path = HOME / "scores.csv"
    with csv_path.open("wb") as out:
        for chunk in csv_chunks(scores_table):
            out.write(chunk)
    psql = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    copy = f"\\copy bench.transaction_scores ({', '.join(LOAD_COLUMNS)}) FROM '{csv_path}' WITH (FORMAT csv)"

    def truncate():
        with conn.cursor() as cur:
            cur.execute("TRUNCATE bench.transaction_scores")
        conn.commit()

    def psql_copy():
        subprocess.run(
            [str(psql), "-h", socket_dir, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", copy],
            check=True,
            capture_output=True,
        )

    run = ScoringRun(DAY, "champion", "bench", 1, "run", 0.2, 0, 0, 0.0, "lake")
    psql_times, load_times = [], []
    for _ in range(3):
        truncate()
        psql_times.append(timed(psql_copy)[1])
        truncate()
        load_times.append(timed(load_day, conn, "bench", run, scores_table)[1])
    # and the real case: replacing a day that is already there (delete + COPY)
    replace = timed(load_day, conn, "bench", run, scores_table)[1]
    p, ours = statistics.median(psql_times), statistics.median(load_times)
    n = scores_table.num_rows
    print(
        f"[load] {n:,} rows: psql \\copy {n / p:,.0f} rows/s ({p:.2f} s); load_day (one transaction: delete, COPY, "
        f"count, run row) {n / ours:,.0f} rows/s ({ours:.2f} s); ratio {p / ours:.2f} (target >= 0.7); "
        f"replacing the loaded day: {replace:.2f} s"
    )
    return ours


def bench_day(spark, lake, cfg, blob, conn, rows: int):
    from loopline.scoring import ModelRef
    from spark_jobs import score

    write_features(lake, DAY, rows, seed=7)
    ref = ModelRef("bench", 1, "run", "champion")
    score.run(spark, DAY, ref, blob, cfg)  # warm-up: Python workers started, the model loaded in each
    result, scoring = timed(score.run, spark, DAY, ref, blob, cfg)
    table, read = timed(lambda: lake.arrow_dataset(result["uri"]).to_table())
    from loopline.score_load import ScoringRun, load_day

    run = ScoringRun(DAY, "champion", "bench", 1, "run", 0.2, result["flagged"], result["explained"], scoring, "lake")
    _, loading = timed(load_day, conn, "bench", run, table)
    total = scoring + read + loading
    print(
        f"[day] {rows:,} transactions: scored + {result['explained']:,} flagged rows explained (exact TreeSHAP) "
        f"+ lake commit {scoring:.1f} s, read back {read:.1f} s, Postgres load {loading:.1f} s; "
        f"total {total:.1f} s (target < 30 s)"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--day-rows", type=int, default=200_000)
    parser.add_argument("--only-throughput", action="store_true", help="skip the day and load stages")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    from loopline.config import get_config, resolve_uri
    from loopline.lake import Lake

    port = free_port()
    spark_server = start_server(port)
    pg_server, conn, socket_dir = start_postgres()
    spark = None
    try:
        cfg = get_config()
        lake = Lake(resolve_uri(cfg.storage.lake_uri))
        spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
        (model, blob), seconds = timed(build_model)
        print(f"[setup] XGBoost {model.fit_info.best_iteration + 1} trees, depth 6, trained in {seconds:.0f} s")
        from loopline import db

        db.migrate(conn, "bench")
        if not args.only_throughput:
            day_table = bench_day(spark, lake, cfg, blob, conn, args.day_rows)
            bench_load(conn, socket_dir, day_table)
        bench_throughput(spark, lake, model, blob, args.rows)
    finally:
        conn.close()
        if spark is not None:
            spark.stop()  # releases the client's gRPC channel: without it the process hangs at exit
        spark_server.terminate()
        spark_server.wait(30)
        pg_server.cleanup()


if __name__ == "__main__":
    with recording(
        "scoring",
        note="batch_score: Spark scoring vs in-process predict, the Postgres load vs psql copy, one day end to end",
    ):
        main()
