"""The Spark feature job: exact window values on a hand-made day, and no use of future data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from loopline import lake as tables
from loopline.config import load_config
from loopline.lake import Lake
from loopline.schemas import FEATURE_COLUMNS
from loopline.synth import generate
from spark_jobs import features, ingest

pytestmark = pytest.mark.spark

DS = dt.date(2026, 3, 10)
TXN_SCHEMA = (
    "transaction_id string, customer_id string, merchant_id string, merchant_category string, "
    "event_time timestamp, amount_eur double, channel string, country string, card_present boolean"
)
HISTORY_SCHEMA = (
    "customer_id string, merchant_id string, country string, cnt long, amount_sum double, amount_sumsq double, "
    "last_event_time timestamp, ds date"
)
LABEL_SCHEMA = "merchant_id string, merchant_category string, n_labels long, n_fraud long, ds date"


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def txn(tid, customer, merchant, when, amount, country="DE", category="grocery"):
    return (tid, customer, merchant, category, ts(when), amount, "pos", country, True)


@pytest.fixture(scope="module")
def inputs(spark):
    today = [
        txn("a", "c1", "m1", "2026-03-10 10:00:00", 10.0),
        txn("b", "c1", "m2", "2026-03-10 10:30:00", 20.0),
        txn("c", "c1", "m1", "2026-03-10 12:00:00", 30.0, country="FR"),
        txn("d", "c2", "m1", "2026-03-10 00:10:00", 40.0),
        txn("e", "c3", "m9", "2026-03-10 03:00:00", 5.0, category="jewelry"),
    ]
    previous = [txn("p1", "c1", "m1", "2026-03-09 23:45:00", 5.0), txn("p2", "c2", "m1", "2026-03-09 23:50:00", 7.0)]
    history = [
        ("c1", "m1", "DE", 2, 20.0, 200.0, ts("2026-03-07 09:00:00"), dt.date(2026, 3, 7)),
        ("c1", "m3", "DE", 1, 50.0, 2500.0, ts("2026-02-28 09:00:00"), dt.date(2026, 2, 28)),
        ("c2", "m1", "DE", 1, 7.0, 49.0, ts("2026-03-09 23:50:00"), dt.date(2026, 3, 9)),
    ]
    labels = [("m1", "grocery", 100, 10, dt.date(2026, 3, 9)), ("m2", "grocery", 0, 0, dt.date(2026, 3, 9))]
    return (
        spark.createDataFrame(today, TXN_SCHEMA),
        spark.createDataFrame(previous, TXN_SCHEMA),
        spark.createDataFrame(history, HISTORY_SCHEMA),
        spark.createDataFrame(labels, LABEL_SCHEMA),
    )


def _by_id(frame) -> dict:
    return {row.transaction_id: row.asDict() for row in frame.collect()}


def test_window_values(inputs):
    out = features.build_features(*inputs, DS, short_days=7, long_days=30, prior_strength=50.0)
    assert tuple(out.columns) == FEATURE_COLUMNS
    rows = _by_id(out)
    b = rows["b"]
    assert (b["cnt_1h"], b["sum_1h"]) == (1, 10.0)  # only a, 30 minutes earlier
    assert (b["cnt_24h"], b["sum_24h"]) == (2, 15.0)  # a and last night's p1
    assert b["cnt_7d"] == 3  # two on 03-07 (history) + a today; 02-28 is outside 7 days
    assert b["cnt_30d"] == 4
    assert b["sum_30d"] == pytest.approx(80.0)
    assert b["is_new_merchant"] == 1  # m2 never seen for c1
    assert b["is_new_country"] == 0
    assert b["seconds_since_last_txn"] == 1800.0
    assert b["customer_history_days"] == 10  # first seen 02-28
    c = rows["c"]
    assert c["is_new_merchant"] == 0  # m1 in history and earlier today
    assert c["is_new_country"] == 1
    assert c["is_foreign"] == 1  # home country of c1 is DE
    assert c["cnt_1h"] == 0
    assert c["amount_to_avg_30d"] == pytest.approx(30.0 / (100.0 / 5))
    # Merchant risk smoothed towards the global rate (10/100) with prior strength 50.
    assert c["merchant_risk"] == pytest.approx((10 + 50 * 0.1) / (100 + 50))
    d = rows["d"]
    assert (d["cnt_1h"], d["sum_1h"]) == (1, 7.0)  # crosses midnight: p2 at 23:50
    assert d["is_night"] == 1
    e = rows["e"]  # a customer with no history at all
    assert (e["cnt_24h"], e["cnt_30d"], e["customer_history_days"]) == (0, 0, 0)
    assert e["is_new_merchant"] == 1
    assert e["amount_to_avg_30d"] == 1.0
    assert e["seconds_since_last_txn"] == features.LONG_AGO_SECONDS
    assert e["merchant_risk"] == pytest.approx(0.1)  # unknown merchant: the global rate


def test_same_day_future_rows_change_nothing(spark, inputs):
    today, previous, history, labels = inputs
    before = _by_id(features.build_features(today, previous, history, labels, DS))
    later = spark.createDataFrame(
        [
            txn("z1", "c1", "m7", "2026-03-10 12:00:01", 9999.0, country="US"),
            txn("z2", "c2", "m1", "2026-03-10 23:59:00", 1.0),
        ],
        TXN_SCHEMA,
    )
    after = _by_id(features.build_features(today.unionByName(later), previous, history, labels, DS))
    for tid, row in before.items():
        assert after[tid] == row, f"features of {tid} changed when later transactions were added"


def test_history_and_labels_after_ds_change_nothing(spark, tmp_path: Path):
    """Whole job on generated days: ingesting later days (new labels, aggregates) leaves day D's features alone."""
    landing, lake_root = tmp_path / "landing", tmp_path / "lake"
    start = dt.date(2026, 1, 1)
    generate(start, 5, landing, transactions_per_day=600, seed=3)
    cfg = load_config(
        environ={"LOOPLINE__STORAGE__LANDING_URI": str(landing), "LOOPLINE__STORAGE__LAKE_URI": str(lake_root)}
    )
    lake = Lake(str(lake_root))
    day = start + dt.timedelta(days=2)

    def ingest_day(d):
        result = ingest.run(spark, d, cfg)
        ingest.publish(d, result["tables"], cfg=cfg)

    def feature_rows(d):
        built = features.run(spark, d, cfg)
        features.publish(d, built["version"], built["rows"], cfg=cfg)
        return sorted((tuple(r) for r in spark.read.parquet(lake.partition(tables.FEATURES, d)).collect()), key=repr)

    for d in tables.day_range(start, day):
        ingest_day(d)
    first = feature_rows(day)
    assert len(first) == 600
    for d in tables.day_range(day + dt.timedelta(days=1), start + dt.timedelta(days=4)):
        ingest_day(d)
    assert feature_rows(day) == first

    # A hole in history (a day with a drop that was never ingested) stops the job with instructions.
    hole = Lake(str(lake_root)).partition_root(tables.CUSTOMER_DAILY, start + dt.timedelta(days=1))
    (Path(hole) / "_CURRENT").unlink()
    with pytest.raises(features.HistoryIncomplete, match="2026-01-02"):
        features.run(spark, day, cfg)
