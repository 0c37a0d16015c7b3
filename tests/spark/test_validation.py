"""GX gates (loopline.validation) against the session's Spark Connect server and pandas.

Frames are tiny and built in memory; each Spark gate costs a few seconds of GX metric queries, so every
test validates as few frames as it can and asserts everything it needs on that one result.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest

from loopline import schemas
from loopline.synth import CHANNELS
from loopline.validation import (
    GX_DIR,
    FailedExpectation,
    GateFailed,
    GateResult,
    check_gate,
    default_params,
    load_suite,
    row_count_bounds,
    run_gate,
    suite_names,
)

pytestmark = pytest.mark.spark

DS = "2026-01-05"
START = dt.datetime(2026, 1, 5, 8, 0)
INT_FEATURES = {*schemas.INT_FEATURES, *schemas.LONG_FEATURES}


def ddl(types: dict[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in types.items())


def report_path(uri: str | None) -> Path:
    assert uri is not None
    assert uri.startswith("file://"), uri
    return Path(unquote(urlparse(uri).path))


def by_type(result: GateResult) -> dict[tuple[str, str | None], FailedExpectation]:
    return {(item.expectation, item.column): item for item in result.failed}


def raw_rows(n: int = 6) -> list[dict]:
    return [
        {
            "transaction_id": f"t{i}",
            "event_time": START + dt.timedelta(minutes=7 * i),
            "customer_id": f"c{i % 3}",
            "merchant_id": f"m{i % 2}",
            "merchant_category": "grocery",
            "amount": 10.0 + i,
            "currency": ("EUR", "USD", "GBP")[i % 3],
            "amount_eur": 9.5 + i,
            "channel": CHANNELS[i % 3],
            "country": ("DE", "FR")[i % 2],
            "card_present": i % 2 == 0,
            "source_file": "transactions/ds=2026-01-05/part-00000.csv",
        }
        for i in range(n)
    ]


def raw_frame(spark, rows: list[dict]):
    return spark.createDataFrame(
        [tuple(row[c] for c in schemas.RAW_TRANSACTION_TYPES) for row in rows],
        ddl(schemas.RAW_TRANSACTION_TYPES),
    )


def feature_rows(n: int = 8) -> list[dict]:
    rows = []
    for i in range(n):
        hour = (8 + i) % 24
        row = {
            "transaction_id": f"t{i}",
            "customer_id": f"c{i % 3}",
            "merchant_id": f"m{i % 2}",
            "event_time": START + dt.timedelta(hours=i),
            "channel": CHANNELS[i % 3],
            "merchant_category": "grocery",
            "country": "DE",
            "amount_eur": 20.0 + i,
            "log_amount": 3.0,
            "hour_of_day": hour,
            "day_of_week": 1,
            "is_night": 0,
            "card_present": i % 2,
            "is_foreign": 0,
            "cnt_1h": 1,
            "sum_1h": 20.0,
            "cnt_24h": 2,
            "sum_24h": 40.0,
            "cnt_7d": 3,
            "sum_7d": 60.0,
            "cnt_30d": 4,
            "sum_30d": 80.0,
            "avg_amount_30d": 20.0,
            "amount_to_avg_30d": 1.0,
            "amount_zscore_30d": None if i < 3 else 0.1,
            "seconds_since_last_txn": None if i < 3 else 3600.0,
            "is_new_merchant": int(i < 2),
            "is_new_country": 0,
            "customer_history_days": i,
            "merchant_risk": 0.01,
            "category_risk": 0.02,
            "merchant_label_count": 5,
        }
        rows.append(row)
    return rows


def feature_frame(spark, rows: list[dict]):
    types = {c: "string" for c in schemas.FEATURE_COLUMNS}
    types["event_time"] = "timestamp"
    for name in schemas.NUMERIC_FEATURES:
        types[name] = "int" if name in INT_FEATURES else "double"
    return spark.createDataFrame([tuple(row[c] for c in schemas.FEATURE_COLUMNS) for row in rows], ddl(types))


# ---------------------------------------------------------------------------------------------------------
# Pure functions (no Spark)


def test_row_count_bounds_relative_to_median():
    assert row_count_bounds([100, 120, 80, 1000], min_ratio=0.5, max_ratio=2.0, min_rows=1) == (55, 220)
    assert row_count_bounds([3], min_ratio=0.5, max_ratio=2.0, min_rows=10) == (10, 10)


def test_row_count_bounds_without_history_only_min_rows():
    assert row_count_bounds([], min_ratio=0.5, max_ratio=2.0, min_rows=7) == (7, None)
    with pytest.raises(ValueError, match="min_ratio"):
        row_count_bounds([10], min_ratio=3.0, max_ratio=2.0, min_rows=1)


def test_every_suite_loads_without_dropping_expectations():
    assert set(suite_names()) >= {"raw_transactions", "raw_labels", "ingest_stats", "features"}
    for name in suite_names():
        written = json.loads((GX_DIR / f"{name}.json").read_text())["expectations"]
        suite = load_suite(name, {})
        # "for_each" expectations expand to one per item, "when" ones drop out while their parameter is null
        params = default_params()
        expected = sum(
            0
            if spec.get("when") and params[spec["when"]] is None
            else len(params[spec["for_each"]])
            if "for_each" in spec
            else 1
            for spec in written
        )
        assert len(suite.expectations) == expected, name
        kwargs = [e.configuration.kwargs for e in suite.expectations]
        assert "$PARAMETER" not in json.dumps(kwargs, default=str)


def test_window_columns_of_the_features_suite_follow_the_config():
    suite = load_suite("features", {"window_count_columns": ["cnt_3d"], "window_sum_columns": ["sum_3d"]})
    counted = {
        e.configuration.kwargs["column"]
        for e in suite.expectations
        if e.expectation_type == "expect_column_values_to_be_between"
        and "max_value" in e.configuration.kwargs
        and e.configuration.kwargs["column"].startswith("cnt_")
    }
    assert counted == {"cnt_3d"}
    without_countries = load_suite("raw_transactions", {"countries": None, "min_rows": 1, "max_rows": None})
    with_countries = load_suite("raw_transactions", {"min_rows": 1, "max_rows": None})
    assert len(with_countries.expectations) == len(without_countries.expectations) + 1


def test_load_suite_substitutes_parameters_and_rejects_unknowns():
    suite = load_suite("raw_transactions", {"min_rows": 5, "max_rows": None})
    by_name = {e.expectation_type: e for e in suite.expectations}
    counts = by_name["expect_table_row_count_to_be_between"]
    assert counts.min_value == 5
    assert counts.max_value is None
    columns = by_name["expect_table_columns_to_match_set"]
    assert set(columns.column_set) == set(schemas.RAW_TRANSACTION_TYPES)
    with pytest.raises(ValueError, match="unknown GX suite 'nope'"):
        load_suite("nope", {})


def test_load_suite_names_missing_parameters(tmp_path, monkeypatch):
    suite = {
        "name": "custom",
        "expectations": [
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": {"$PARAMETER": "floor"}}},
        ],
    }
    (tmp_path / "custom.json").write_text(json.dumps(suite))
    monkeypatch.setattr("loopline.validation.GX_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"GX suite 'custom' needs parameters \['floor'\]"):
        load_suite("custom", {})
    assert load_suite("custom", {"floor": 3}).expectations[0].min_value == 3
    (tmp_path / "broken.json").write_text(json.dumps({"expectations": [{"type": "expect_nothing", "kwargs": {}}]}))
    with pytest.raises(ValueError, match="expectation #0 \\(expect_nothing\\)"):
        load_suite("broken", {})


def test_importing_validation_does_not_import_great_expectations():
    code = "import sys, loopline.validation; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_gate_failed_message_and_pickling():
    result = GateResult(
        suite="raw_transactions",
        success=False,
        evaluated=14,
        ds=DS,
        report_uri="file:///r/index.html",
        failed=(FailedExpectation("expect_column_values_to_not_be_null", "transaction_id", 3, None, "3 unexpected"),),
    )
    error = GateFailed(result)
    assert str(error) == (
        "GX gate 'raw_transactions' failed for ds=2026-01-05: 1 of 14 expectations failed:\n"
        "  - expect_column_values_to_not_be_null(transaction_id): 3 unexpected\n"
        "Validation report: file:///r/index.html"
    )
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # noqa: S301 - our own bytes
    assert json.loads(json.dumps(result.to_dict()))["failed"][0]["unexpected_count"] == 3


# ---------------------------------------------------------------------------------------------------------
# Gates on data


def test_clean_raw_passes_with_only_min_rows_when_no_history(spark, tmp_path):
    low, high = row_count_bounds([], min_ratio=0.5, max_ratio=2.0, min_rows=1)
    result = check_gate(
        raw_frame(spark, raw_rows()),
        "raw_transactions",
        ds=DS,
        params={"min_rows": low, "max_rows": high},
        report_dir=tmp_path,
    )
    assert result.success
    assert result.failed == ()
    assert result.summary() == ""
    assert result.evaluated == len(load_suite("raw_transactions", {}).expectations)
    assert report_path(result.report_uri).is_file()


def test_dirty_raw_fails_naming_expectations_and_counts(spark, tmp_path):
    rows = raw_rows()
    rows[0]["transaction_id"] = None
    rows[2]["transaction_id"] = "t1"
    rows[3]["channel"] = "carrier-pigeon"
    rows[4]["amount_eur"] = -5.0
    with pytest.raises(GateFailed) as caught:
        check_gate(raw_frame(spark, rows), "raw_transactions", ds=DS, report_dir=tmp_path)
    result = caught.value.result
    failed = by_type(result)
    assert {key: item.unexpected_count for key, item in failed.items()} == {
        ("expect_column_values_to_not_be_null", "transaction_id"): 1,
        ("expect_column_values_to_be_unique", "transaction_id"): 2,
        ("expect_column_values_to_be_in_set", "channel"): 1,
        ("expect_column_values_to_be_between", "amount_eur"): 1,
    }
    assert not result.success
    message = str(caught.value)
    assert message.startswith(f"GX gate 'raw_transactions' failed for ds={DS}: 4 of {result.evaluated} ")
    assert "expect_column_values_to_be_in_set(channel): 1 unexpected" in message
    assert "'carrier-pigeon'" in message
    assert "expect_column_values_to_be_unique(transaction_id): 2 unexpected" in message
    uri = message.rsplit("Validation report: ", 1)[1].strip()
    assert uri == result.report_uri
    page = report_path(uri)
    assert page.is_file()
    assert "carrier-pigeon" in page.read_text()
    assert str(page).startswith(str(tmp_path / "raw_transactions" / f"ds={DS}"))


def test_too_few_rows_fails_the_row_count(spark):
    low, high = row_count_bounds([100, 110, 90], min_ratio=0.5, max_ratio=2.0, min_rows=1)
    result = run_gate(
        raw_frame(spark, raw_rows(6)), "raw_transactions", ds=DS, params={"min_rows": low, "max_rows": high}
    )
    assert not result.success
    assert result.report_uri is None
    (item,) = result.failed
    assert item.expectation == "expect_table_row_count_to_be_between"
    assert item.observed == 6
    assert item.detail == "observed 6, expected >= 50 and <= 200"


def test_wrong_column_set_fails_clearly(spark):
    frame = (
        raw_frame(spark, raw_rows()).drop("merchant_category", "channel").withColumnRenamed("source_file", "sourcefile")
    )
    with pytest.raises(GateFailed) as caught:
        check_gate(frame, "raw_transactions", ds=DS)
    lines = str(caught.value).splitlines()
    assert lines[1] == (
        "  - expect_table_columns_to_match_set: missing columns ['channel', 'merchant_category', "
        "'source_file']; unexpected columns ['sourcefile']"
    )
    assert (
        '  - expect_column_values_to_be_in_set(channel): could not be evaluated: Error: The column "channel" '
        "in BatchData does not exist."
    ) in lines
    assert lines[-1] == "Validation report: not rendered (run_gate was called without report_dir)"


def test_labels_gate(spark):
    types = ddl(schemas.RAW_LABEL_TYPES)
    good = [(f"t{i}", i % 2, START + dt.timedelta(days=3), "labels/part-0.csv") for i in range(4)]
    assert run_gate(spark.createDataFrame(good, types), "raw_labels", ds=DS).success
    bad = [*good, ("t0", 2, None, "labels/part-0.csv")]
    failed = by_type(run_gate(spark.createDataFrame(bad, types), "raw_labels", ds=DS))
    assert set(failed) == {
        ("expect_column_values_to_be_unique", "transaction_id"),
        ("expect_column_values_to_be_in_set", "is_fraud"),
        ("expect_column_values_to_not_be_null", "reported_at"),
    }


def test_ingest_stats_on_pandas(tmp_path):
    def stats(read: int, quarantined: int) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "rows_read": read,
                    "rows_written": read - quarantined,
                    "rows_quarantined": quarantined,
                    "quarantine_rate": quarantined / read,
                }
            ]
        )

    params = {"max_quarantine_rate": 0.05, "min_rows": 1}
    assert check_gate(stats(1000, 10), "ingest_stats", ds=DS, params=params).success
    with pytest.raises(GateFailed) as caught:
        check_gate(stats(1000, 80), "ingest_stats", ds=DS, params=params, report_dir=tmp_path)
    (item,) = caught.value.result.failed
    assert (item.expectation, item.column, item.unexpected_count) == (
        "expect_column_values_to_be_between",
        "quarantine_rate",
        1,
    )
    assert "expect_column_values_to_be_between(quarantine_rate)" in str(caught.value)
    assert report_path(caught.value.result.report_uri).is_file()


def test_features_gate(spark):
    rows = feature_rows()
    params = {"amount_mean_min": 5.0, "amount_mean_max": 500.0}
    passed = run_gate(feature_frame(spark, rows), "features", ds=DS, params=params)
    assert passed.success, passed.summary()

    rows[1]["hour_of_day"] = 24
    rows[2]["merchant_risk"] = 1.5
    failed = run_gate(feature_frame(spark, rows), "features", ds=DS, params=params)
    assert {(item.expectation, item.column, item.unexpected_count) for item in failed.failed} == {
        ("expect_column_values_to_be_between", "hour_of_day", 1),
        ("expect_column_values_to_be_between", "merchant_risk", 1),
    }
