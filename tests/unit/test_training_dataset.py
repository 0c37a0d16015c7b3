"""The trainer's training set: point-in-time labels, maturity, time split and fingerprint on a hand-built lake.

The lake is written the way Spark + publish leave it: ``<table>/ds=D/run=v1/part-0.parquet`` + ``_SUCCESS``,
then ``Lake.commit``. No Spark.

Calendar used throughout (cutoff 2026-02-01, window 10 days, validation 2, holdout 2, maturity 3):

    01-20 01-21 | 01-22 .. 01-25 | 01-26 01-27 | 01-28 01-29 | 01-30 01-31 | 02-01
    before window|     train     |  validation |   holdout   |  immature   | cutoff (never read)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.lake import FEATURES, LABELED_TRANSACTIONS, POINTER, Lake, day_range
from loopline.schemas import FEATURE_COLUMNS
from loopline.training.dataset import LABEL, TrainingDataError, build_training_set, plan_splits

CUTOFF = dt.date(2026, 2, 1)
ARGS = {"window_days": 10, "validation_days": 2, "holdout_days": 2, "label_maturity_days": 3}
PER_DAY = 4
LATE_ID = "2026-01-24-t3"  # its label is reported on the cutoff day: unknown at training time
EDGE_ID = "2026-01-24-t2"  # reported at 23:59:59 the day before the cutoff: known


def _write(lake: Lake, table: str, day: dt.date, frame: pd.DataFrame, version: str = "v1") -> None:
    folder = Path(lake.version_uri(table, day, version))
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "part-0.parquet", index=False)
    (folder / "_SUCCESS").write_bytes(b"")
    lake.commit(table, day, version)


def _features(day: dt.date) -> pd.DataFrame:
    rows = []
    for i in range(PER_DAY):
        row = {name: 0.0 for name in FEATURE_COLUMNS}
        row.update(
            transaction_id=f"{day}-t{i}",
            customer_id=f"c{i}",
            merchant_id=f"m{i}",
            event_time=pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=2 + i),
            channel="online" if i == 0 else "pos",
            merchant_category="electronics",
            country="DE",
            amount_eur=10.0 * (i + 1),
            hour_of_day=2 + i,
            merchant_label_count=3,
        )
        rows.append(row)
    frame = pd.DataFrame(rows)[list(FEATURE_COLUMNS)]
    return frame.astype({"hour_of_day": "int32", "merchant_label_count": "int64"})


def _labels_by_report_day(days: list[dt.date], flip: str | None = None) -> dict[dt.date, pd.DataFrame]:
    """Every transaction labelled one day later at noon (t0 is fraud), except LATE_ID (on the cutoff) and
    EDGE_ID (23:59:59 before the cutoff)."""
    rows = []
    for day in days:
        for i in range(PER_DAY):
            tid = f"{day}-t{i}"
            reported = pd.Timestamp(day + dt.timedelta(days=1), tz="UTC") + pd.Timedelta(hours=12)
            if tid == LATE_ID:
                reported = pd.Timestamp(CUTOFF, tz="UTC") + pd.Timedelta(hours=1)
            if tid == EDGE_ID:
                reported = pd.Timestamp(CUTOFF, tz="UTC") - pd.Timedelta(seconds=1)
            fraud = int(i == 0) if tid != flip else 1 - int(i == 0)
            rows.append(
                {
                    "transaction_id": tid,
                    "customer_id": f"c{i}",
                    "merchant_id": f"m{i}",
                    "merchant_category": "electronics",
                    "event_time": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=2 + i),
                    "is_fraud": np.int32(fraud),
                    "reported_at": reported,
                }
            )
    frame = pd.DataFrame(rows)
    frame["report_day"] = frame["reported_at"].dt.date
    return {day: part.drop(columns="report_day") for day, part in frame.groupby("report_day")}


@pytest.fixture
def lake_root(tmp_path: Path) -> str:
    lake = Lake(str(tmp_path / "lake"))
    days = day_range(dt.date(2026, 1, 20), CUTOFF)
    for day in days:
        _write(lake, FEATURES, day, _features(day))
    for day, frame in _labels_by_report_day(days).items():
        _write(lake, LABELED_TRANSACTIONS, day, frame)
    return lake.root


def _days(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["ds"].unique())


def test_split_boundaries_by_day(lake_root):
    data = build_training_set(lake_root, CUTOFF, **ARGS)
    assert _days(data.train) == ["2026-01-22", "2026-01-23", "2026-01-24", "2026-01-25"]
    assert _days(data.validation) == ["2026-01-26", "2026-01-27"]
    assert _days(data.holdout) == ["2026-01-28", "2026-01-29"]
    splits = data.fingerprint["splits"]
    assert splits["train"] == {"start": "2026-01-22", "end": "2026-01-25", "rows": 15, "positives": 4}
    assert splits["validation"] == {"start": "2026-01-26", "end": "2026-01-27", "rows": 8, "positives": 2}
    assert splits["holdout"] == {"start": "2026-01-28", "end": "2026-01-29", "rows": 8, "positives": 2}
    assert set(data.train.columns) == {*FEATURE_COLUMNS, LABEL, "ds"}
    assert data.train[LABEL].dtype.kind == "i"


def test_labels_reported_on_or_after_the_cutoff_are_unknown(lake_root):
    data = build_training_set(lake_root, CUTOFF, **ARGS)
    ids = set(data.train["transaction_id"])
    assert LATE_ID not in ids  # reported on the cutoff day: excluded, not treated as legit
    assert EDGE_ID in ids  # reported a second before the cutoff: known
    assert data.fingerprint["unlabelled_rows_excluded"] == 1
    assert data.fingerprint["label_cutoff"] == "2026-02-01T00:00:00+00:00"
    assert "2026-02-01" not in data.fingerprint["label_partitions"]  # the cutoff day's labels are never read

    # One day later the same label is known and the row joins the training set.
    later = build_training_set(lake_root, CUTOFF + dt.timedelta(days=1), **{**ARGS, "window_days": 11})
    assert LATE_ID in set(later.train["transaction_id"])


def test_immature_days_are_excluded_unless_maturity_is_lowered(lake_root):
    data = build_training_set(lake_root, CUTOFF, **ARGS)
    all_days = set(_days(data.train) + _days(data.validation) + _days(data.holdout))
    assert not all_days & {"2026-01-30", "2026-01-31"}  # cutoff - day < 3: immature although labelled
    assert data.fingerprint["immature_days_excluded"] == 2
    assert data.fingerprint["mature_end"] == "2026-01-29"
    assert sorted(data.fingerprint["feature_partitions"]) == [
        str(d) for d in day_range(dt.date(2026, 1, 22), dt.date(2026, 1, 29))
    ]

    fresher = build_training_set(lake_root, CUTOFF, **{**ARGS, "label_maturity_days": 1})
    assert fresher.fingerprint["immature_days_excluded"] == 0
    assert fresher.fingerprint["splits"]["holdout"]["end"] == "2026-01-31"
    # ...but 01-31's labels arrive on the cutoff day: its rows are unlabelled yet (the bias maturity avoids).
    assert _days(fresher.holdout) == ["2026-01-30"]
    assert fresher.fingerprint["unlabelled_rows_excluded"] == 1 + PER_DAY


def test_fingerprint_is_stable_and_changes_with_a_label(lake_root):
    first = build_training_set(lake_root, CUTOFF, **ARGS).fingerprint
    second = build_training_set(lake_root, CUTOFF, **ARGS).fingerprint
    assert first == second
    assert first["feature_partitions"]["2026-01-22"] == "v1"
    assert len(first["data_sha256"]) == 64

    # A corrected verdict, published as a new version of its label partition, changes the fingerprint.
    lake = Lake(lake_root)
    flipped = _labels_by_report_day(day_range(dt.date(2026, 1, 20), CUTOFF), flip="2026-01-23-t1")
    _write(lake, LABELED_TRANSACTIONS, dt.date(2026, 1, 24), flipped[dt.date(2026, 1, 24)], version="v2")
    third = build_training_set(lake_root, CUTOFF, **ARGS).fingerprint
    assert third["data_sha256"] != first["data_sha256"]
    assert third["label_partitions"]["2026-01-24"] == "v2"
    assert third["splits"]["train"]["positives"] == first["splits"]["train"]["positives"] + 1


def test_a_later_correction_replaces_the_first_verdict(lake_root):
    lake = Lake(lake_root)
    correction = _labels_by_report_day([dt.date(2026, 1, 22)])[dt.date(2026, 1, 23)].head(1).copy()
    correction["is_fraud"] = np.int32(0)  # 2026-01-22-t0 was reported fraud on 01-23, then cleared on 01-27
    correction["reported_at"] = pd.Timestamp("2026-01-27T09:00:00Z")
    existing = pd.read_parquet(lake.partition(LABELED_TRANSACTIONS, "2026-01-27"))
    _write(lake, LABELED_TRANSACTIONS, dt.date(2026, 1, 27), pd.concat([existing, correction]), version="v2")
    data = build_training_set(lake_root, CUTOFF, **ARGS)
    row = data.train.set_index("transaction_id").loc["2026-01-22-t0"]
    assert row[LABEL] == 0


def test_no_positives_is_a_clear_error(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    days = day_range(dt.date(2026, 1, 20), CUTOFF)
    for day in days:
        _write(lake, FEATURES, day, _features(day))
    for day, frame in _labels_by_report_day(days).items():
        _write(lake, LABELED_TRANSACTIONS, day, frame.assign(is_fraud=np.int32(0)))
    with pytest.raises(TrainingDataError, match=r"no positive labels in the train split \(2026-01-22\.\.2026-01-25"):
        build_training_set(lake.root, CUTOFF, **ARGS)


def test_no_data_and_bad_windows_are_clear_errors(lake_root, tmp_path):
    with pytest.raises(ValueError, match="no committed feature partitions"):
        build_training_set(lake_root, dt.date(2025, 6, 1), **ARGS)
    with pytest.raises(ValueError, match="no committed feature partitions"):
        build_training_set(str(tmp_path / "empty"), CUTOFF, **ARGS)
    with pytest.raises(TrainingDataError, match="leaves no training days"):
        build_training_set(lake_root, CUTOFF, **{**ARGS, "window_days": 6})
    # Holdout days with features but no labels at all.
    lake = Lake(lake_root)
    for day in day_range(dt.date(2026, 1, 28), dt.date(2026, 1, 29)):
        version = "v9"
        folder = Path(lake.version_uri(LABELED_TRANSACTIONS, day + dt.timedelta(days=1), version))
        folder.mkdir(parents=True)
        empty = pd.read_parquet(lake.partition(LABELED_TRANSACTIONS, day + dt.timedelta(days=1))).head(0)
        empty.to_parquet(folder / "part-0.parquet", index=False)
        (folder / "_SUCCESS").write_bytes(b"")
        lake.commit(LABELED_TRANSACTIONS, day + dt.timedelta(days=1), version)
    with pytest.raises(TrainingDataError, match="no labelled rows in the holdout split"):
        build_training_set(lake_root, CUTOFF, **ARGS)


def test_plan_splits_is_pure_date_arithmetic():
    plan = plan_splits(dt.date(2026, 2, 28), window_days=45, validation_days=5, holdout_days=7, label_maturity_days=30)
    assert (plan.window.start, plan.window.end) == (dt.date(2026, 1, 14), dt.date(2026, 2, 27))
    assert plan.mature_end == dt.date(2026, 1, 29)  # 2026-02-28 - 30 days
    assert (plan.holdout.start, plan.holdout.end) == (dt.date(2026, 1, 23), dt.date(2026, 1, 29))
    assert (plan.validation.start, plan.validation.end) == (dt.date(2026, 1, 18), dt.date(2026, 1, 22))
    assert (plan.train.start, plan.train.end) == (dt.date(2026, 1, 14), dt.date(2026, 1, 17))
    assert len(plan.immature_days) == 29


def test_a_label_feed_marking_too_much_as_fraud_is_refused(lake_root):
    # About one transaction in four is fraud in this lake: above a 20 % ceiling, the feed is not trusted.
    poisoned = r"labels look broken or poisoned: 2\d\.\d% of the \d+ labelled rows in the train split"
    with pytest.raises(TrainingDataError, match=poisoned):
        build_training_set(lake_root, CUTOFF, **ARGS, max_fraud_rate=0.2)
    assert build_training_set(lake_root, CUTOFF, **ARGS, max_fraud_rate=0.3).fingerprint["positives"] > 0


def test_a_features_version_that_failed_its_gate_is_never_trained_on(lake_root):
    """A gate that fails leaves the day's new features version uncommitted: training keeps reading the
    committed one (or none), never the rejected rows."""
    lake = Lake(lake_root)
    day = dt.date(2026, 1, 23)
    rejected = _features(day).assign(amount_eur=-1.0)
    folder = Path(lake.version_uri(FEATURES, day, "v2-rejected"))
    folder.mkdir(parents=True)
    rejected.to_parquet(folder / "part-0.parquet", index=False)  # written, never committed
    training = build_training_set(lake_root, CUTOFF, **ARGS)
    assert training.fingerprint["feature_partitions"][str(day)] == "v1"
    assert (training.train["amount_eur"] > 0).all()

    # A day whose only version failed its gate has no pointer: it is missing, and the fingerprint says so.
    (Path(lake.partition_root(FEATURES, day)) / POINTER).unlink()
    training = build_training_set(lake_root, CUTOFF, **ARGS)
    assert str(day) in training.fingerprint["missing_feature_days"]
    assert str(day) not in set(training.train["ds"])
