"""Hyper-parameter search vs the configured parameters: holdout AUC gained and what the search costs.

Writes a synthetic lake (the trainer's generator, no Spark), then trains XGBoost twice with the trainer
(:func:`loopline.training.trainer.run_training`, CPU) on the same window, so both models are judged on the
same holdout rows: once with ``training.search.trials: 0`` (the configured parameters, the baseline) and once
with a search of ``--trials`` trials within ``--minutes``. Prints and writes to ``benchmarks/results/search.json``:
holdout ROC AUC and PR AUC of both, their difference, the search's wall time against the single fit's
(cost ratio), and how many trials completed or were pruned.

    .venv/bin/python benchmarks/bench_search.py [--days 40] [--rows 1500] [--trials 20] [--minutes 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--rows", type=int, default=1500, help="transactions per day")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="loopline-bench-search-"))
    os.environ["LOOPLINE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("LOOPLINE_SEARCH_STORAGE_URL", None)  # in memory: each run searches from scratch

    from loopline.config import get_config
    from loopline.training.synthetic import write_synthetic_lake
    from loopline.training.trainer import TrainingOptions, run_training

    start = dt.date(2026, 1, 1)
    write_synthetic_lake(home / "lake", start, args.days, rows_per_day=args.rows, seed=args.seed)
    cutoff = start + dt.timedelta(days=args.days)
    cfg = get_config()
    common = {
        "lake": str(home / "lake"),
        "tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
        "artifact_root": str(home / "artifacts"),
        "window_days": args.days,
        "validation_days": 5,
        "holdout_days": 7,
        "label_maturity_days": 5,
        "device": "cpu",
    }
    runs = {}
    for name, trials in (("fixed", 0), ("searched", args.trials)):
        search = cfg.training.search.model_copy(update={"trials": trials, "minutes": args.minutes})
        options = TrainingOptions.from_config(cfg, cutoff, run_name=f"bench-{name}", **common)
        options = dataclasses.replace(options, search=search)
        began = time.perf_counter()
        result = run_training(options)
        runs[name] = {
            "wall_seconds": round(time.perf_counter() - began, 2),
            "fit_seconds": round(result["seconds"], 2),
            "holdout_roc_auc": result["metrics"]["holdout_roc_auc"],
            "holdout_pr_auc": result["metrics"]["holdout_pr_auc"],
            "holdout_rows": result["fingerprint"]["splits"]["holdout"]["rows"],
            "search": result["search"],
        }
        print(f"[{name}] holdout ROC AUC {runs[name]['holdout_roc_auc']:.4f} PR AUC {runs[name]['holdout_pr_auc']:.4f}"
              f" in {runs[name]['wall_seconds']:.1f} s")  # fmt: skip
    fixed, searched = runs["fixed"], runs["searched"]
    search = searched["search"]
    summary = {
        "machine_cores": os.cpu_count(),
        "days": args.days,
        "rows_per_day": args.rows,
        "trials_budget": args.trials,
        "minutes_budget": args.minutes,
        "roc_auc_gain": searched["holdout_roc_auc"] - fixed["holdout_roc_auc"],
        "pr_auc_gain": searched["holdout_pr_auc"] - fixed["holdout_pr_auc"],
        "search_seconds": search["seconds"],
        "cost_ratio_wall": searched["wall_seconds"] / fixed["wall_seconds"],
        "trials_completed": search["completed"],
        "trials_pruned": search["pruned"],
        "best_params": search["params"],
        "runs": runs,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(
        f"[search] ROC AUC {summary['roc_auc_gain']:+.4f}, PR AUC {summary['pr_auc_gain']:+.4f} on the same "
        f"{fixed['holdout_rows']} holdout rows; {search['completed']} trials completed, {search['pruned']} pruned "
        f"in {search['seconds']:.1f} s; training wall time {summary['cost_ratio_wall']:.1f}x the fixed configuration"
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
