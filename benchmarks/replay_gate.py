"""The champion/challenger gate the demo replays, over several dates: does the drift's retraining win?

For each first-champion cut-off C and window W: trains the first champion (cut-off C, window W) and the
retraining of the demo's first drifted night (cut-off C + stable nights + 1, the configured window),
registers both in a scratch MLflow store and lets the real gate (``registry.register_and_gate``) decide,
exactly as ``train_model`` does. Prints the challenger's alias and the gate's reason per pair.

Needs a lake with features, e.g. the one `make demo` leaves (``.loopline/lake``, the default here):

    .venv/bin/python benchmarks/replay_gate.py [--lake PATH] [--cutoffs 2026-11-22,2026-11-27] [--windows 50,35]

Dates default to the demo's first monitored day and the 5 days before it. About 15 s per training on two
cores. Not part of `make benchmarks`: it measures a lake that a demo made.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

from record import recording

from loopline.config import get_config, resolve_uri


def _dates(text: str) -> list[dt.date]:
    return [dt.date.fromisoformat(part) for part in text.split(",") if part]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def gate(lake: str, cutoff: dt.date, window: int, retrain_cutoff: dt.date, scratch: Path) -> tuple[str, str]:
    """Train the first champion and the retraining into ``scratch``; the retraining's alias and the reason."""
    from loopline import registry
    from loopline.training.tracking import mlflow_client
    from loopline.training.trainer import TrainingOptions, run_training

    cfg = get_config()
    uri = f"sqlite:///{scratch}/mlflow.db"
    client = mlflow_client(uri)
    decision = ("", "")
    for train_cutoff, window_days in ((cutoff, window), (retrain_cutoff, cfg.training.window_days)):
        options = TrainingOptions.from_config(
            cfg,
            train_cutoff,
            lake=lake,
            tracking_uri=uri,
            artifact_root=str(scratch / "artifacts"),
            experiment="replay-gate",
            window_days=window_days,
        )
        result = run_training(options)
        verdict, move = registry.register_and_gate(
            client,
            run_id=result["run_id"],
            model_name="replay-gate",
            gate=cfg.gate,
            threshold=cfg.scoring.threshold,
            triggered_by="replay_gate",
            reason="benchmarks/replay_gate.py",
        )
        decision = (move.alias, verdict.reason)
    return decision


def main(argv: list[str] | None = None) -> int:
    from loopline.demo import DemoPlan

    plan = DemoPlan()
    # drift_monitor trains as of the morning after the first drifted night
    retrain_after = plan.drift_start + dt.timedelta(days=1) - plan.first_monitored
    default_cutoffs = ",".join(str(plan.first_monitored - dt.timedelta(days=n)) for n in range(5, -1, -1))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default=resolve_uri(get_config().storage.lake_uri))
    parser.add_argument("--cutoffs", type=_dates, default=_dates(default_cutoffs))
    windows = [get_config().training.window_days, plan.first_champion_window_days]
    parser.add_argument("--windows", type=_ints, default=windows)
    args = parser.parse_args(argv)
    if "://" not in args.lake and not (Path(args.lake) / "features").is_dir():
        print(f"no features under {args.lake}: run `make demo` first or pass --lake", file=sys.stderr)
        return 2
    promoted: dict[int, int] = {}
    for window in args.windows:
        for cutoff in args.cutoffs:
            with tempfile.TemporaryDirectory(prefix="replay-gate-") as scratch:
                alias, reason = gate(args.lake, cutoff, window, cutoff + retrain_after, Path(scratch))
            promoted[window] = promoted.get(window, 0) + (alias == "champion")
            print(f"[gate] first champion {cutoff}, {window:>3}-day window: retraining -> {alias}: {reason}")
    for window, count in promoted.items():
        print(f"[gate] {window:>3}-day first champion: the retraining promoted {count} of {len(args.cutoffs)} times")
    return 0


if __name__ == "__main__":
    with recording(
        "replay_gate",
        note="the gate the demo replays: first champion vs the first drifted night's retraining, several dates",
    ):
        code = main()
        if code:
            raise SystemExit(code)
