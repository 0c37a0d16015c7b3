"""Trainer quality and speed on generated data pushed through the real feature pipeline.

Generates --days of landing drops, runs the Spark ingest and feature jobs for every day (warm Spark Connect
server), then trains each model type with the trainer CLI (`python -m loopline.training`, CPU) and prints:
- the holdout ROC AUC against the AUC of the generator's true fraud probability on the same rows
  (target: ratio >= 0.95), and
- training seconds and rows/s (target: the default window in under 5 minutes on 2 cores).

    .venv/bin/python benchmarks/bench_training.py [--days 45] [--rows 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Shares the feature benchmark's helpers and its temporary LOOPLINE_HOME (set when it is imported).
from bench_feature_pipeline import HOME, free_port, ingest_day, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--maturity", type=int, default=10, help="features.label_maturity_days for this run")
    args = parser.parse_args()

    import mlflow
    import pandas as pd
    from pyspark.sql import SparkSession
    from sklearn.metrics import roc_auc_score

    from loopline.config import get_config
    from loopline.synth import generate
    from spark_jobs import features

    os.environ["LOOPLINE__FEATURES__LABEL_MATURITY_DAYS"] = str(args.maturity)
    os.environ["LOOPLINE__TRAINING__WINDOW_DAYS"] = str(args.days - 1)
    port = free_port()
    server = start_server(port)
    cfg = get_config()
    start = dt.date(2026, 1, 1)
    cutoff = start + dt.timedelta(days=args.days)
    spark = None
    try:
        spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
        generate(start, args.days, HOME / "landing", transactions_per_day=args.rows, seed=21)
        began = time.perf_counter()
        for offset in range(args.days):
            day = start + dt.timedelta(days=offset)
            ingest_day(spark, day, cfg)
            built = features.run(spark, day, cfg)
            features.publish(day, built["version"], built["rows"], cfg=cfg)
        print(
            f"[setup] {args.days} days x {args.rows} rows through ingest + features in "
            f"{time.perf_counter() - began:.0f} s"
        )
    finally:
        if spark is not None:
            spark.stop()  # releases the client's gRPC channel: without it the process hangs at exit
        server.terminate()
        server.wait(30)

    truth = pd.concat(pd.read_csv(path) for path in sorted((HOME / "truth").glob("ds=*/part-*.csv*"))).set_index(
        "transaction_id"
    )["fraud_probability"]
    mlflow.set_tracking_uri(cfg.resolve(cfg.mlflow.tracking_uri))
    for model_type in ("xgboost", "mlp"):
        output = HOME / f"{model_type}.json"
        began = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "loopline.training",
                "--cutoff",
                str(cutoff),
                "--model-type",
                model_type,
                "--output-json",
                str(output),
                "--reason",
                "benchmark",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - began
        result = json.loads(output.read_text())
        holdout = pd.read_parquet(
            mlflow.artifacts.download_artifacts(run_id=result["run_id"], artifact_path="holdout.parquet")
        )
        model = mlflow.pyfunc.load_model(result["model_uri"])
        from loopline.schemas import FEATURE_COLUMNS

        proba = model.predict(holdout[list(FEATURE_COLUMNS)])
        model_auc = roc_auc_score(holdout["is_fraud"], proba)
        true_auc = roc_auc_score(holdout["is_fraud"], truth.reindex(holdout["transaction_id"]).to_numpy())
        print(
            f"[{model_type}] holdout ROC AUC {model_auc:.4f} vs true-probability AUC {true_auc:.4f}: "
            f"ratio {model_auc / true_auc:.3f} (target >= 0.95); {len(holdout)} holdout rows"
        )
        print(
            f"[{model_type}] trained on {result['train_rows']} rows in {result['seconds']:.1f} s "
            f"({result['rows_per_second']:,.0f} rows/s), CLI wall {wall:.1f} s on {result['device']} "
            "(target < 300 s)"
        )


if __name__ == "__main__":
    main()
