"""Trainer quality and speed on generated data pushed through the real feature pipeline.

Generates --days of landing drops, runs the Spark ingest and feature jobs for every day (warm Spark Connect
server), then trains each model type with the trainer CLI (`python -m loopline.training`, CPU) and prints:
- the holdout ROC AUC against the AUC of the generator's true fraud probability on the same rows
  (target: ratio >= 0.95), and
- training seconds and rows/s (target: the default window in under 5 minutes on 2 cores).

With ``--drift-kind KIND --drift-day N`` the days from N on are drifted (``loopline.synth``) and XGBoost is
trained twice: as of the drift's first day (what a retraining on the first drifted night can know: no label
of the new pattern is mature yet) and as of the last day (its training window holds label-mature drifted
days, as a retraining triggered by the realized-performance drop once those labels mature does). Both score
the same post-drift rows (the second model's holdout days), against the true-probability AUC.

    .venv/bin/python benchmarks/bench_training.py [--days 45] [--rows 5000]
    .venv/bin/python benchmarks/bench_training.py --days 60 --drift-kind new_pattern --drift-day 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_feature_pipeline as pipeline  # the feature benchmark's server and day helpers
from bench_feature_pipeline import free_port, ingest_day, start_server
from record import recording

HOME = Path(tempfile.mkdtemp(prefix="loopline-bench-training-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--maturity", type=int, default=10, help="features.label_maturity_days for this run")
    parser.add_argument("--drift-kind", help="generator drift from --drift-day on (compares two retrainings)")
    parser.add_argument("--drift-day", type=int, help="first drifted day, as a day index")
    args = parser.parse_args()
    if (args.drift_kind is None) != (args.drift_day is None):
        parser.error("--drift-kind and --drift-day go together")

    import mlflow
    import pandas as pd
    from pyspark.sql import SparkSession
    from sklearn.metrics import roc_auc_score

    from loopline.config import get_config
    from loopline.synth import generate
    from spark_jobs import features

    os.environ["LOOPLINE_HOME"] = str(HOME)  # before the configuration is read
    pipeline.HOME = HOME  # where its Spark server logs
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
        drift_start = None if args.drift_day is None else start + dt.timedelta(days=args.drift_day)
        generate(
            start, args.days, HOME / "landing", transactions_per_day=args.rows, seed=21,
            drift_start=drift_start, drift_kind=args.drift_kind,
        )  # fmt: skip
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
    from loopline.schemas import FEATURE_COLUMNS

    def train(model_type: str, as_of: dt.date) -> tuple[dict, object, float]:
        output = HOME / f"{model_type}-{as_of}.json"
        began = time.perf_counter()
        subprocess.run(
            [
                sys.executable, "-m", "loopline.training", "--cutoff", str(as_of), "--model-type", model_type,
                "--output-json", str(output), "--reason", "benchmark",
            ],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - began
        result = json.loads(output.read_text())
        return result, mlflow.pyfunc.load_model(result["model_uri"]), wall

    def holdout_of(result: dict):
        return pd.read_parquet(
            mlflow.artifacts.download_artifacts(run_id=result["run_id"], artifact_path="holdout.parquet")
        )

    def auc_line(label: str, model, rows) -> str:
        model_auc = roc_auc_score(rows["is_fraud"], model.predict(rows[list(FEATURE_COLUMNS)]))
        true_auc = roc_auc_score(rows["is_fraud"], truth.reindex(rows["transaction_id"]).to_numpy())
        return (
            f"{label} ROC AUC {model_auc:.4f} vs true-probability AUC {true_auc:.4f}: "
            f"ratio {model_auc / true_auc:.3f} (target >= 0.95); {len(rows)} rows"
        )

    if drift_start is not None:
        after, after_model, _ = train("xgboost", cutoff)
        _, before_model, _ = train("xgboost", drift_start)
        rows = holdout_of(after)
        days = sorted(rows["ds"].astype(str).unique())
        print(f"[drift] {args.drift_kind} from {drift_start}; post-drift rows: days {days[0]} .. {days[-1]}")
        print(
            auc_line(
                f"[drift] retrained as of {drift_start} (first drifted night, no drifted labels):", before_model, rows
            )
        )
        print(auc_line(f"[drift] retrained as of {cutoff} (drifted days' labels mature):", after_model, rows))
        return
    for model_type in ("xgboost", "mlp"):
        result, model, wall = train(model_type, cutoff)
        print(auc_line(f"[{model_type}] holdout", model, holdout_of(result)))
        print(
            f"[{model_type}] trained on {result['train_rows']} rows in {result['seconds']:.1f} s "
            f"({result['rows_per_second']:,.0f} rows/s), CLI wall {wall:.1f} s on {result['device']} "
            "(target < 300 s)"
        )


if __name__ == "__main__":
    with recording(
        "training_drift" if "--drift-kind" in sys.argv else "training",
        note="the trainer CLI on generated days: holdout ROC AUC vs the true-probability AUC, time",
    ):
        main()
