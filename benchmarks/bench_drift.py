"""drift_monitor's detection: speed on one night, and its decisions over generated nights.

1. One night at --rows rows (the full feature table plus a score) against a 5,000-row reference, for the
   alibi-detect and scipy backends: fitting (once per model version) and testing (every night), target
   < 10 s per night on two cores.
2. Decisions over generated data (``loopline.synth.generate``): --stable-nights stable nights after a week
   of reference days, then three drifted nights, for each drift kind of the generator. Every night goes
   through the detector and :func:`loopline.drift.retrain_decision` with the configured cooldown, as the DAG
   decides. Targets: zero triggers on stable nights; a trigger on the first drifted night.

   The nights here are the features computable from a landing drop alone (amount, log amount, hour, card
   present, channel, category, country), read straight from the generator's CSV files: running 100+ days
   through the Spark feature job would take hours on this machine. The e2e test runs the DAG on the full
   feature table.

3. ``--full``: the same question through the real pipeline: each kind's days go through the Spark ingest and
   feature jobs; after --full-warmup-days of history (the 30-day windows fill) an XGBoost model is trained
   on the reference week (labels: the generator's outcomes), and every night is the full feature table plus
   that model's score, tested with the configured detector (``drift.exclude_features`` left out, the
   features still warming up on the reference's first day reported but not counted, as the DAG does).

    .venv/bin/python benchmarks/bench_drift.py [--rows 200000] [--night-rows 20000] [--stable-nights 30]
    .venv/bin/python benchmarks/bench_drift.py --full [--full-rows 20000] [--full-stable-nights 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from record import recording

RAW_NUMERIC = ["amount_eur", "log_amount", "hour_of_day", "card_present"]
KINDS = ("covariate", "new_pattern", "fraud_surge")


def timed(call, *args, **kwargs):
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - started


def bench_night(rows: int) -> None:
    from loopline.drift import AlibiDriftDetector, ScipyDriftDetector
    from loopline.training.synthetic import synthetic_day

    reference, p_ref = synthetic_day(dt.date(2026, 3, 1), 5000, 1)
    reference["score"] = p_ref
    current, p_cur = synthetic_day(dt.date(2026, 3, 2), rows, 2)
    current["score"] = p_cur
    for backend in (AlibiDriftDetector, ScipyDriftDetector):
        detector, fit_s = timed(backend().fit, reference)
        detector.test(current.head(1000))  # warm: imports, torch start-up
        runs = [timed(detector.test, current) for _ in range(3)]
        result, test_s = runs[0][0], statistics.median(seconds for _, seconds in runs)
        print(
            f"[night] {backend.backend:>5}: fit {fit_s:.2f} s (once per model version); one night of {rows:,} rows "
            f"{test_s:.2f} s (target < 10 s; {len(result.tests)} tests: {result.summary()})"
        )


def raw_features(landing: Path, day: dt.date) -> pd.DataFrame:
    from loopline.config import get_config
    from loopline.reference import static_rates

    folder = landing / "transactions" / f"ds={day}"
    raw = pd.concat(pd.read_csv(path, dtype={"card_present": str}) for path in sorted(folder.glob("*.csv*")))
    amount = raw["amount"] * raw["currency"].map(static_rates(get_config().reference))
    return pd.DataFrame(
        {
            "amount_eur": amount,
            "log_amount": np.log1p(amount),
            "hour_of_day": pd.to_datetime(raw["event_time"], utc=True).dt.hour,
            "card_present": (raw["card_present"] == "true").astype(int),
            "channel": raw["channel"],
            "merchant_category": raw["merchant_category"],
            "country": raw["country"],
        }
    )


def bench_decisions(night_rows: int, stable_nights: int, backend: str) -> None:
    from loopline.config import get_config
    from loopline.drift import AlibiDriftDetector, DetectorSettings, ScipyDriftDetector, retrain_decision
    from loopline.schemas import CATEGORICAL_FEATURES
    from loopline.synth import generate

    cfg = get_config().drift
    cls = {"alibi": AlibiDriftDetector, "scipy": ScipyDriftDetector}[backend]
    start, reference_days = dt.date(2026, 1, 1), 7
    drift_start = start + dt.timedelta(days=reference_days + stable_nights)
    for kind in KINDS:
        with tempfile.TemporaryDirectory(prefix="loopline-bench-drift-") as tmp:
            landing = Path(tmp) / "landing"
            days = reference_days + stable_nights + 3
            generate(
                start, days, landing, transactions_per_day=night_rows, seed=7, drift_start=drift_start, drift_kind=kind
            )
            reference = pd.concat(raw_features(landing, start + dt.timedelta(days=i)) for i in range(reference_days))
            reference = reference.sample(n=min(cfg.reference_sample_size, len(reference)), random_state=0)
            # The configured decision rule on the raw columns, without the segments (they slice engineered features).
            settings = replace(
                DetectorSettings.from_config(cfg),
                numeric_features=RAW_NUMERIC,
                categorical_features=CATEGORICAL_FEATURES,
                segments=(),
                min_segment_excess=0.0,
                segment_signals=1,
            )
            detector = cls(settings).fit(reference)
            last_trigger, stable_triggers, stable_drift, first_drifted = None, 0, 0, []
            for offset in range(reference_days, days):
                day = start + dt.timedelta(days=offset)
                result = detector.test(raw_features(landing, day))
                night_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
                decision = retrain_decision(result, False, last_trigger, night_end, cfg.cooldown_hours, False)
                if decision.trigger:
                    last_trigger = night_end
                if day < drift_start:
                    stable_drift += result.drift
                    stable_triggers += decision.trigger
                else:
                    first_drifted.append((day, result, decision))
            day, result, decision = first_drifted[0]
            later = sum(d.trigger for _, _, d in first_drifted[1:])
            print(
                f"[decisions] {kind:>11} ({backend}, {night_rows:,} rows/night): {stable_nights} stable nights: "
                f"{stable_drift} drifted, {stable_triggers} triggers (target 0); first drifted night {day}: "
                f"{'TRIGGER' if decision.trigger else 'no trigger'} ({result.summary()}); "
                f"triggers on the next two drifted nights: {later} (cooldown {cfg.cooldown_hours} h)"
            )


def bench_full(
    night_rows: int, stable_nights: int, backend: str, warmup_days: int, kinds: list[str], reuse: Path | None = None
) -> None:
    """Nights through ingest + features on Spark, with a trained model's score (see the module docstring).

    ``reuse``: the folder of an earlier ``--full`` run (printed at its start): its lakes are tested again
    without running Spark, e.g. after changing the drift settings."""
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_feature_pipeline as pipeline
    from pyspark.sql import SparkSession

    from loopline import lake as tables
    from loopline.config import get_config
    from loopline.drift import build_detector, retrain_decision
    from loopline.lake import Lake
    from loopline.monitoring import warming
    from loopline.schemas import FEATURE_COLUMNS
    from loopline.synth import generate
    from loopline.training.models import TrainParams, train_model
    from spark_jobs import features

    root = reuse or Path(tempfile.mkdtemp(prefix="loopline-bench-drift-full-"))
    print(f"[full] lakes under {root}")
    pipeline.HOME = root
    os.environ["LOOPLINE_HOME"] = str(root)
    port = pipeline.free_port()
    server = None if reuse else pipeline.start_server(port)
    spark = None
    start, reference_days = dt.date(2026, 1, 1), 7
    first_reference = start + dt.timedelta(days=warmup_days)  # the windows have filled by then
    drift_start = first_reference + dt.timedelta(days=reference_days + stable_nights)
    days = warmup_days + reference_days + stable_nights + 3
    try:
        if server is not None:
            spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
        for kind in kinds:
            home = root / kind
            os.environ["LOOPLINE__STORAGE__LANDING_URI"] = str(home / "landing")
            os.environ["LOOPLINE__STORAGE__LAKE_URI"] = str(home / "lake")
            get_config.cache_clear()
            cfg = get_config()
            began = time.perf_counter()
            if reuse is None:
                generate(
                    start, days, home / "landing", transactions_per_day=night_rows, seed=7, drift_start=drift_start,
                    drift_kind=kind,
                )  # fmt: skip
            truth = pd.concat(pd.read_csv(path) for path in sorted((home / "truth").glob("ds=*/part-*.csv*")))
            outcome = truth.set_index("transaction_id")["is_fraud"]
            frames = {}
            lake = Lake(str(home / "lake"))
            for offset in range(days):
                day = start + dt.timedelta(days=offset)
                if reuse is None:
                    pipeline.ingest_day(spark, day, cfg)
                    built = features.run(spark, day, cfg)
                    features.publish(day, built["version"], built["rows"], cfg=cfg)
                frames[day] = pd.read_parquet(lake.partition(tables.FEATURES, day))[list(FEATURE_COLUMNS)]
            setup_s = time.perf_counter() - began
            week = [frames[first_reference + dt.timedelta(days=i)] for i in range(reference_days)]
            train, valid = pd.concat(week[:-1], ignore_index=True), week[-1]
            params = TrainParams(max_rounds=200, seed=1)
            y_train = outcome.reindex(train["transaction_id"]).to_numpy()
            y_valid = outcome.reindex(valid["transaction_id"]).to_numpy()
            model = train_model("xgboost", train, y_train, valid, y_valid, params, device="cpu")
            reference = pd.concat(week, ignore_index=True)
            reference["score"] = model.predict_proba(reference)
            detector = build_detector(cfg.drift.model_copy(update={"backend": backend}), reference)
            warming_up = warming(cfg, str(home / "lake"), reference)  # as drift_monitor decides it
            print(f"[full] {kind}: warming up on the reference's first day: {', '.join(warming_up) or 'none'}")
            last_trigger, stable_triggers, stable_drift, drifted = None, 0, 0, []
            stable_excess: dict[str, float] = {}  # each segment's largest growth on a stable night
            for offset in range(warmup_days + reference_days, days):
                day = start + dt.timedelta(days=offset)
                night = frames[day].assign(score=model.predict_proba(frames[day]))
                result = detector.test(night, warming=warming_up)
                night_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
                decision = retrain_decision(result, False, last_trigger, night_end, cfg.drift.cooldown_hours, False)
                if decision.trigger:
                    last_trigger = night_end
                if day < drift_start:
                    for row in result.tests:
                        if row.test == "segment":
                            stable_excess[row.feature] = max(stable_excess.get(row.feature, -1.0), row.effect)
                    stable_drift += result.drift
                    stable_triggers += decision.trigger
                    print(f"[full]   stable night {day}: {result.summary()}")
                else:
                    drifted.append((day, result, decision))
            day, result, decision = drifted[0]
            print(
                f"[full] {kind:>11} ({backend}, {night_rows:,} rows/night through ingest + features "
                f"{'(reused lake)' if reuse else f'in {setup_s:.0f} s'}, "
                f"XGBoost score): {stable_nights} stable nights: {stable_drift} drifted, {stable_triggers} triggers; "
                f"first drifted night {day}: {'TRIGGER' if decision.trigger else 'no trigger'} ({result.summary()}); "
                f"next two nights drifted: {[r.drift for _, r, _ in drifted[1:]]}"
            )
            first = {row.feature: row.effect for row in result.tests if row.test == "segment"}
            print(
                f"[full] {kind:>11} segments (share growth, floor {cfg.drift.min_segment_excess}): "
                + "; ".join(
                    f"{name}: largest on a stable night {stable_excess[name]:+.4f}, first drifted night "
                    f"{first[name]:+.4f}"
                    for name in first
                )
            )
    finally:
        if spark is not None:
            spark.stop()
        if server is not None:
            server.terminate()
            server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--night-rows", type=int, default=20_000)
    parser.add_argument("--stable-nights", type=int, default=30)
    parser.add_argument("--backend", choices=["alibi", "scipy"], default="alibi")
    parser.add_argument("--full", action="store_true", help="only the nights through the real pipeline (minutes)")
    parser.add_argument("--full-rows", type=int, default=20_000)
    parser.add_argument("--full-stable-nights", type=int, default=5)
    parser.add_argument("--full-warmup-days", type=int, default=30, help="history before the reference week")
    parser.add_argument("--full-kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--full-reuse", type=Path, help="test the lakes of an earlier --full run again (no Spark)")
    args = parser.parse_args()
    if args.full:
        bench_full(
            args.full_rows, args.full_stable_nights, args.backend, args.full_warmup_days, args.full_kinds,
            args.full_reuse,
        )  # fmt: skip
        return
    bench_night(args.rows)
    bench_decisions(args.night_rows, args.stable_nights, args.backend)


if __name__ == "__main__":
    with recording(
        "drift", note="drift_monitor detection: one night per backend, decisions over stable and drifted nights"
    ):
        main()
