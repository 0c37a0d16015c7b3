"""The Spark feature job: exact window values on a hand-made day, no use of future data, and a rolling state
that, advanced day by day, equals one rebuilt from the daily aggregates."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest

from loopline import lake as tables
from loopline.config import load_config
from loopline.lake import Lake
from loopline.schemas import FEATURE_COLUMNS, feature_schema
from loopline.synth import generate
from loopline.training.dataset import TrainingDataError, _Reader
from spark_jobs import features, ingest

pytestmark = pytest.mark.spark

DS = dt.date(2026, 3, 10)
TXN_SCHEMA = (
    "transaction_id string, customer_id string, merchant_id string, merchant_category string, "
    "event_time timestamp, amount_eur double, channel string, country string, card_present boolean"
)
HISTORY_SCHEMA = (
    "customer_id string, merchant_id string, country string, cnt long, amount_cents long, amount_cents_sq long, "
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
        ("c1", "m1", "DE", 2, 2000, 2_000_000, ts("2026-03-07 09:00:00"), dt.date(2026, 3, 7)),  # cents
        ("c1", "m3", "DE", 1, 5000, 25_000_000, ts("2026-02-28 09:00:00"), dt.date(2026, 2, 28)),
        ("c2", "m1", "DE", 1, 700, 490_000, ts("2026-03-09 23:50:00"), dt.date(2026, 3, 9)),
    ]
    labels = [("m1", "grocery", 100, 10, dt.date(2026, 3, 9)), ("m2", "grocery", 0, 0, dt.date(2026, 3, 9))]
    history_frame = spark.createDataFrame(history, HISTORY_SCHEMA)
    customer_state = features.state_from_aggregates(history_frame, DS, window_days=(7, 30))
    merchants_state = features.merchants_from_aggregates(history_frame, DS, long_days=30)
    risk_state = features.risk_state_from_aggregates(spark.createDataFrame(labels, LABEL_SCHEMA), DS, risk_days=90)
    return (
        spark.createDataFrame(today, TXN_SCHEMA),
        spark.createDataFrame(previous, TXN_SCHEMA),
        customer_state,
        merchants_state,
        risk_state,
    )


def _by_id(frame) -> dict:
    return {row.transaction_id: row.asDict() for row in frame.collect()}


def test_window_values(inputs):
    out = features.build_features(*inputs, DS, prior_strength=50.0)
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
    today, previous, *states = inputs
    before = _by_id(features.build_features(today, previous, *states, DS))
    later = spark.createDataFrame(
        [
            txn("z1", "c1", "m7", "2026-03-10 12:00:01", 9999.0, country="US"),
            txn("z2", "c2", "m1", "2026-03-10 23:59:00", 1.0),
        ],
        TXN_SCHEMA,
    )
    after = _by_id(features.build_features(today.unionByName(later), previous, *states, DS))
    for tid, row in before.items():
        assert after[tid] == row, f"features of {tid} changed when later transactions were added"


def test_transactions_sharing_a_second_give_the_same_bits_in_any_order(spark, inputs):
    """Window sums run over whole cents: in doubles, (0.10 + 0.20) + 0.30 and (0.10 + 0.30) + 0.20 differ in
    the last bit, and Spark leaves the order of transactions that share a second to the input."""
    _, _, *states = inputs
    rows = [
        txn("t1", "c9", "m1", "2026-03-10 10:00:00", 0.10),
        txn("t2", "c9", "m1", "2026-03-10 10:05:00", 0.20),
        txn("t3", "c9", "m1", "2026-03-10 10:05:00", 0.30),
        txn("t4", "c9", "m1", "2026-03-10 10:10:00", 1.00),
    ]
    orders = [rows, [rows[0], rows[2], rows[1], rows[3]]]
    built = [_by_id(features.build_features(spark.createDataFrame(o, TXN_SCHEMA), None, *states, DS)) for o in orders]
    assert built[0] == built[1]
    assert built[0]["t4"]["sum_1h"] == 0.6  # exactly: 60 cents
    assert built[0]["t4"]["sum_7d"] == 0.6


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


# -- the rolling state ---------------------------------------------------------------------------------------

STATE_DS = dt.date(2026, 3, 10)  # state(D) holds days D-4..D-1 (long) and D-2..D-1 (short)


def _day(day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour)


def _rows(frame, key: tuple[str, ...]) -> dict:
    return {tuple(row[k] for k in key): row.asDict() for row in frame.collect()}


def test_advance_state_moves_the_window_by_one_day_exactly(spark):
    """state(D-1) + agg(D-1) - agg(D-3) (short) - agg(D-5) (long) on hand-made rows, against exact values
    and against a rebuild of state(D) from the same aggregates; the same for the customer-merchant bitmaps."""

    def agg(rows):
        return [
            (c, m, country, n, cents, sq, _day(day, hour), dt.date(2026, 3, day))
            for c, m, country, n, cents, sq, day, hour in rows
        ]

    older = agg(
        [
            ("c1", "m1", "DE", 1, 1000, 1_000_000, 5, 9),  # only on 03-05: leaves the long window on D
            ("c1", "m2", "DE", 1, 10, 100, 5, 11),  # 03-05 leaves ...
            ("c1", "m2", "DE", 1, 20, 400, 7, 12),  # ... 03-07 stays (long) and leaves the short window
            ("c2", "m1", "FR", 1, 500, 250_000, 8, 8),
        ]
    )
    added = agg([("c2", "m1", "FR", 2, 700, 250_000, 9, 20), ("c3", "m3", "DE", 1, 150, 22_500, 9, 6)])
    history = spark.createDataFrame(older, HISTORY_SCHEMA)
    previous = features.state_from_aggregates(history, STATE_DS - dt.timedelta(days=1), window_days=(2, 4))
    key = ("customer_id", "country")
    before = _rows(previous, key)
    assert before[("c1", "DE")]["days_mask"] == 0b1010  # bit i = day 03-08 minus i: 03-07 and 03-05
    assert (before[("c1", "DE")]["cnt_4d"], before[("c1", "DE")]["cents_4d"]) == (3, 1030)

    def day_of(rows, day):
        frame = spark.createDataFrame([r for r in rows if r[-1] == dt.date(2026, 3, day)], HISTORY_SCHEMA)
        return frame.drop("ds")

    advanced = features.advance_state(
        previous,
        day_of(added, 9),
        {2: day_of(older, 7), 4: day_of(older, 5)},  # D-1-short, D-1-long
        window_days=(2, 4),
    )
    after = _rows(advanced, key)
    assert set(after) == {("c1", "DE"), ("c2", "FR"), ("c3", "DE")}
    c1 = after[("c1", "DE")]
    assert (c1["cnt_2d"], c1["cents_2d"]) == (0, 0)
    # Exact: 10 + 20 - 10 cents is 20 cents (in euros as doubles, 0.1 + 0.2 - 0.1 is 0.20000000000000004).
    assert (c1["cnt_4d"], c1["cents_4d"], c1["cents_sq_long"]) == (1, 20, 400)
    assert c1["days_mask"] == 0b100  # 03-07, two days before 03-09
    assert c1["last_event_time"] == _day(7, 12)
    c2 = after[("c2", "FR")]
    assert (c2["cnt_2d"], c2["cents_2d"], c2["cnt_4d"], c2["cents_sq_long"]) == (3, 1200, 3, 500_000)
    assert (c2["days_mask"], c2["last_event_time"]) == (0b11, _day(9, 20))
    assert after[("c3", "DE")]["days_mask"] == 1

    rebuilt = features.state_from_aggregates(
        spark.createDataFrame(older + added, HISTORY_SCHEMA), STATE_DS, window_days=(2, 4)
    )
    assert _rows(rebuilt, key) == after

    windows = _rows(features.customer_windows(advanced, (2, 4)), ("customer_id",))
    assert windows[("c1",)]["h_history_days"] == 3  # first active day in the window: 03-07
    assert (windows[("c1",)]["h_sum_4d"], windows[("c1",)]["h_sumsq_long"]) == (0.2, 0.04)
    assert windows[("c2",)]["h_history_days"] == 2

    previous_merchants = features.merchants_from_aggregates(history, STATE_DS - dt.timedelta(days=1), long_days=4)
    merchants = features.advance_merchants(previous_merchants, day_of(added, 9), long_days=4)
    expected = {("c1", "m2"): 0b100, ("c2", "m1"): 0b11, ("c3", "m3"): 1}  # c1/m1 (03-05 only) fell off
    assert {(r.customer_id, r.merchant_id): r.days_mask for r in merchants.collect()} == expected
    rebuilt_merchants = features.merchants_from_aggregates(
        spark.createDataFrame(older + added, HISTORY_SCHEMA), STATE_DS, long_days=4
    )
    assert {(r.customer_id, r.merchant_id): r.days_mask for r in rebuilt_merchants.collect()} == expected

    labels = [("m1", "grocery", 5, 1, dt.date(2026, 3, 6)), ("m2", "fuel", 2, 0, dt.date(2026, 3, 8))]
    new_labels = [("m2", "fuel", 3, 1, dt.date(2026, 3, 9))]
    previous_risk = features.risk_state_from_aggregates(
        spark.createDataFrame(labels, LABEL_SCHEMA), STATE_DS - dt.timedelta(days=1), risk_days=3
    )
    risk = features.advance_risk_state(
        previous_risk,
        spark.createDataFrame(new_labels, LABEL_SCHEMA).drop("ds"),
        spark.createDataFrame(labels[:1], LABEL_SCHEMA).drop("ds"),  # 03-06 = D-1-risk leaves
    )
    assert {tuple(r) for r in risk.collect()} == {("m2", "fuel", 5, 1)}
    rebuilt_risk = features.risk_state_from_aggregates(
        spark.createDataFrame(labels + new_labels, LABEL_SCHEMA), STATE_DS, risk_days=3
    )
    assert {tuple(r) for r in rebuilt_risk.collect()} == {("m2", "fuel", 5, 1)}


CHAIN_START = dt.date(2026, 1, 1)
CHAIN_DAYS = 7  # days 0..6 in order: from day 5 on, days leave every window (2d, 3d, 4d, labels 3d)
# Not the default set: every column is named from this list (a 6h sliding window, a 3d between the others).
CHAIN_WINDOWS = "[1h, 6h, 24h, 2d, 3d, 4d]"


@pytest.fixture(scope="module")
def chain(spark, tmp_path_factory):
    """Days ingested and featurised in order with short windows (CHAIN_WINDOWS, labels 3d), as the DAG does."""
    root = tmp_path_factory.mktemp("chain")
    landing, lake_root = root / "landing", root / "lake"
    generate(CHAIN_START, CHAIN_DAYS + 1, landing, transactions_per_day=300, seed=7)
    cfg = load_config(
        environ={
            "LOOPLINE__STORAGE__LANDING_URI": str(landing),
            "LOOPLINE__STORAGE__LAKE_URI": str(lake_root),
            "LOOPLINE__FEATURES__WINDOWS": CHAIN_WINDOWS,
            "LOOPLINE__FEATURES__RISK_WINDOW_DAYS": "3",
        }
    )
    lake = Lake(str(lake_root))
    days = [CHAIN_START + dt.timedelta(days=i) for i in range(CHAIN_DAYS)]
    built = {}
    for day in days:
        result = ingest.run(spark, day, cfg)
        ingest.publish(day, result["tables"], cfg=cfg)
        built[day] = features.run(spark, day, cfg)
    return cfg, lake, days, built


def _features(spark, uri: str) -> dict:
    return {row.transaction_id: row.asDict() for row in spark.read.parquet(uri).collect()}


def _state(spark, lake: Lake, table: str, day: dt.date) -> set:
    return {tuple(row) for row in spark.read.parquet(lake.partition(table, day)).collect()}


def assert_same_features(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for tid, row in expected.items():
        for name, value in row.items():
            other = actual[tid][name]
            if isinstance(value, float):
                assert math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-12), (tid, name, other, value)
            else:
                assert other == value, (tid, name, other, value)


def test_incremental_state_equals_a_rebuild(spark, chain):
    cfg, lake, days, built = chain
    assert built[days[0]]["state_path"] == "rebuilt"  # no state for the day before the data starts
    assert {built[day]["state_path"] for day in days[1:]} == {"incremental"}
    stats = lake.stats(tables.STATE_CUSTOMER, days[-1])
    assert stats["path"] == "incremental"
    assert stats["sources"] == {
        str(day): lake.current_version(tables.CUSTOMER_DAILY, day) for day in days[-5:-1]
    }  # the 4 days of the long window
    for day in days[-3:]:
        incremental = {
            table: _state(spark, lake, table, day)
            for table in (tables.STATE_CUSTOMER, tables.STATE_CUSTOMER_MERCHANTS, tables.STATE_MERCHANT_RISK)
        }
        assert incremental[tables.STATE_CUSTOMER]
        rebuilt = features.run(spark, day, cfg, rebuild_state=True)
        assert rebuilt["state_path"] == "rebuilt"
        assert lake.stats(tables.STATE_CUSTOMER, day)["rebuilt_because"] == "rebuild requested"
        for table, rows in incremental.items():
            assert _state(spark, lake, table, day) == rows, f"{table} ds={day}: advanced state != rebuilt state"
        assert_same_features(_features(spark, rebuilt["uri"]), _features(spark, built[day]["uri"]))


def brute_force_windows(raw: pd.DataFrame, day: dt.date, windows: list[str]) -> dict[str, dict[str, float]]:
    """Window features of ``day``'s transactions by direct counting over every raw row (no state, no Spark
    windows): ``<n>h`` is the rows of the customer in the ``n`` hours before (to the second), ``<n>d`` the
    rows of days ``day-n .. day-1`` plus those of ``day`` before the transaction."""
    raw = raw.assign(sec=raw["event_time"].astype("int64") // 10**9)
    long_window = max((w for w in windows if w.endswith("d")), key=lambda w: int(w[:-1]))
    out = {}
    for row in raw[raw["ds"] == day].itertuples():
        mine = raw[raw["customer_id"] == row.customer_id]
        values = {}
        for w in windows:
            n = int(w[:-1])
            if w.endswith("h"):
                inside = mine[(mine["sec"] >= row.sec - 3600 * n) & (mine["sec"] <= row.sec - 1)]
            else:
                earlier_days = (mine["ds"] >= day - dt.timedelta(days=n)) & (mine["ds"] < day)
                inside = mine[earlier_days | ((mine["ds"] == day) & (mine["sec"] <= row.sec - 1))]
            values[f"cnt_{w}"] = len(inside)
            values[f"sum_{w}"] = float(inside["amount_eur"].sum())
        cnt, total = values[f"cnt_{long_window}"], values[f"sum_{long_window}"]
        values[f"avg_amount_{long_window}"] = total / cnt if cnt else row.amount_eur
        values[f"amount_to_avg_{long_window}"] = row.amount_eur / (total / cnt) if cnt else 1.0
        out[row.transaction_id] = values
    return out


def test_every_configured_window_is_computed_and_named_from_the_config(spark, chain):
    """features.windows = CHAIN_WINDOWS: exactly its columns, each equal to a brute-force count over the raw
    rows, on days whose windows are full and leave through the incremental state; training reads them."""
    cfg, lake, days, built = chain
    windows = list(cfg.features.windows)
    schema = feature_schema(windows)
    expected_columns = {f"{kind}_{w}" for w in windows for kind in ("cnt", "sum")}
    assert expected_columns == {"cnt_1h", "sum_1h", "cnt_6h", "sum_6h", "cnt_24h", "sum_24h"} | {
        f"{kind}_{n}d" for n in (2, 3, 4) for kind in ("cnt", "sum")
    }
    named = {c for c in schema.columns if c.startswith(("cnt_", "sum_", "avg_amount_", "amount_to_avg_", "amount_z"))}
    assert named == expected_columns | {"avg_amount_4d", "amount_to_avg_4d", "amount_zscore_4d"}
    assert not any(c.endswith(("_7d", "_30d")) for c in schema.columns)

    raw = pd.concat(
        spark.read.parquet(lake.partition(tables.RAW_TRANSACTIONS, d))
        .select("transaction_id", "customer_id", "event_time", "amount_eur")
        .toPandas()
        .assign(ds=d)
        for d in days
    )
    raw["event_time"] = pd.to_datetime(raw["event_time"], utc=True)
    for day in days[-2:]:
        actual = spark.read.parquet(built[day]["uri"])
        assert tuple(actual.columns) == schema.columns
        assert built[day]["state_path"] == "incremental"
        rows = {r.transaction_id: r.asDict() for r in actual.collect()}
        expected = brute_force_windows(raw, day, windows)
        assert rows.keys() == expected.keys()
        assert len(rows) > 100
        busy = 0
        for tid, values in expected.items():
            busy += values["cnt_3d"] > values["cnt_2d"]
            for name, value in values.items():
                assert rows[tid][name] == pytest.approx(value, rel=1e-9, abs=1e-6), (day, tid, name)
        assert busy > 0, "no transaction tells 2d from 3d: the test data does not exercise the windows"

    # The training set's feature list is the same config-derived list, read from the committed partition.
    day = days[-2]
    features.publish(day, built[day]["version"], built[day]["rows"], cfg=cfg)
    read = _Reader(lake).read(lake.partition(tables.FEATURES, day), schema.columns, tables.FEATURES, day)
    assert tuple(read.column_names) == schema.columns
    with pytest.raises(TrainingDataError, match="lacks column"):
        _Reader(lake).read(lake.partition(tables.FEATURES, day), feature_schema(["7d"]).columns, tables.FEATURES, day)


def test_a_chunk_of_days_builds_exactly_what_each_day_builds(spark, chain):
    """run_days (a range backfill's chunk: one job per state table, one for the features) against the daily
    runs: bit-for-bit the same features and states per day, and states that record the same sources, so the
    next daily run advances them."""
    cfg, lake, days, built = chain
    chunk = days[1:6]  # from day 5 on, days leave every window
    state_tables = (tables.STATE_CUSTOMER, tables.STATE_CUSTOMER_MERCHANTS, tables.STATE_MERCHANT_RISK)
    before = {(table, day): _state(spark, lake, table, day) for table in state_tables for day in chunk}
    sources = {(table, day): lake.stats(table, day)["sources"] for table in state_tables for day in chunk}

    result = features.run_days(spark, chunk, cfg)

    assert list(result) == chunk
    for day in chunk:
        ours = pd.read_parquet(result[day]["uri"]).sort_values("transaction_id").reset_index(drop=True)
        theirs = pd.read_parquet(built[day]["uri"]).sort_values("transaction_id").reset_index(drop=True)
        assert list(ours.columns) == list(theirs.columns)
        assert ours.equals(theirs), f"features ds={day} differ from the day's own run"
        assert result[day]["rows"] == len(theirs)
        for table in state_tables:
            assert _state(spark, lake, table, day) == before[table, day], f"{table} ds={day}"
            assert lake.stats(table, day)["sources"] == sources[table, day]
    assert features.run(spark, days[6], cfg)["state_path"] == "incremental"


def test_a_chunk_refuses_days_without_raw_data(spark, chain):
    cfg, _, days, _ = chain
    later = [days[-1] + dt.timedelta(days=i) for i in (5, 6)]
    with pytest.raises(RuntimeError, match="no committed raw transactions for ds="):
        features.run_days(spark, later, cfg)
    with pytest.raises(ValueError, match="consecutive days"):
        features.run_days(spark, [days[1], days[3]], cfg)


def test_reingested_day_makes_the_next_day_rebuild(spark, chain):
    cfg, lake, days, built = chain
    last = days[-1]
    redo = last - dt.timedelta(days=2)  # inside state(last - 1)'s windows
    result = ingest.run(spark, redo, cfg)
    ingest.publish(redo, result["tables"], cfg=cfg)
    again = features.run(spark, last, cfg)
    assert set(again["state"].values()) == {"rebuilt"}
    assert set(again["state"]) == {tables.STATE_CUSTOMER, tables.STATE_CUSTOMER_MERCHANTS, tables.STATE_MERCHANT_RISK}
    assert str(redo) in lake.stats(tables.STATE_CUSTOMER, last)["rebuilt_because"]
    assert_same_features(_features(spark, again["uri"]), _features(spark, built[last]["uri"]))

    # The rebuilt state records the new version: the next day advances it again.
    following = last + dt.timedelta(days=1)
    result = ingest.run(spark, following, cfg)
    ingest.publish(following, result["tables"], cfg=cfg)
    assert features.run(spark, following, cfg)["state_path"] == "incremental"


def test_aggregates_from_an_older_ingest_stop_the_job_with_instructions(spark, tmp_path):
    landing, lake_root = tmp_path / "landing", tmp_path / "lake"
    generate(CHAIN_START, 2, landing, transactions_per_day=200, seed=5)
    cfg = load_config(
        environ={"LOOPLINE__STORAGE__LANDING_URI": str(landing), "LOOPLINE__STORAGE__LAKE_URI": str(lake_root)}
    )
    lake = Lake(str(lake_root))
    for day in (CHAIN_START, CHAIN_START + dt.timedelta(days=1)):
        result = ingest.run(spark, day, cfg)
        ingest.publish(day, result["tables"], cfg=cfg)
    # Day 0's aggregates as the previous layout wrote them: euro sums in doubles, no cents.
    current = spark.read.parquet(lake.partition(tables.CUSTOMER_DAILY, CHAIN_START))
    old = current.selectExpr("*", "amount_cents / 100.0 AS amount_sum").drop("amount_cents", "amount_cents_sq")
    version = tables.new_version()
    old.write.parquet(lake.version_uri(tables.CUSTOMER_DAILY, CHAIN_START, version))
    lake.commit(tables.CUSTOMER_DAILY, CHAIN_START, version)
    with pytest.raises(features.HistoryIncomplete, match=r"older ingest .* re-ingest the earlier days"):
        features.run(spark, CHAIN_START + dt.timedelta(days=1), cfg)
