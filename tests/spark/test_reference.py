"""Reference data is configuration: a new market (a currency and a country) passes ingest and the raw gate
by a change of loopline.yaml alone; unknown values are still quarantined with their reason; daily EUR rates
carry forward up to ``reference.fx.max_age_days``, after which the currency's rows are quarantined."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from loopline import lake as tables
from loopline.config import DEFAULT_CONFIG, get_config, load_config
from loopline.lake import Lake
from loopline.validation import GateFailed, check_gate
from spark_jobs import ingest
from tests.spark.test_ingest import HEADER, row, write

pytestmark = pytest.mark.spark

DS = dt.date(2026, 3, 2)


def _drop(landing: Path, rows: list[str]) -> None:
    day = landing / "transactions" / f"ds={DS}"
    write(day / "part-0.csv", "\n".join([HEADER, *rows]) + "\n")
    (day / "_SUCCESS").touch()
    labels = landing / "labels" / f"ds={DS}"
    write(labels / "part-0.csv", "transaction_id,is_fraud,reported_at\n")
    (labels / "_SUCCESS").touch()


def _config(tmp_path: Path, mutate) -> Path:
    tree = yaml.safe_load(DEFAULT_CONFIG.read_text())
    tree["storage"].update(landing_uri=str(tmp_path / "landing"), lake_uri=str(tmp_path / "lake"))
    mutate(tree["reference"])
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture
def use_config(monkeypatch):
    """Point the process at a config file (as LOOPLINE_CONFIG does in a deployment)."""

    def use(path: Path):
        monkeypatch.setenv("LOOPLINE_CONFIG", str(path))
        get_config.cache_clear()
        return get_config()

    yield use
    get_config.cache_clear()


def _quarantine(spark, lake: Lake) -> dict[str, str]:
    frame = spark.read.parquet(lake.partition(tables.QUARANTINE_TRANSACTIONS, DS))
    return {r.raw_record.split('"transaction_id":"')[1].split('"')[0]: r.reason for r in frame.collect()}


NEW_MARKET = [
    row("no1", currency="NOK", country="NO", amount="100.00", event_time="2026-03-02T10:00:00Z"),
    row("no2", currency="nok", country="NO", amount="250.00", event_time="2026-03-02T11:00:00Z", customer_id="c2"),
    row("de1", amount="10.00", event_time="2026-03-02T12:00:00Z"),
    row("x1", currency="XYZ", event_time="2026-03-02T13:00:00Z"),
    row("x2", country="ZZ", event_time="2026-03-02T14:00:00Z"),
]


def test_a_new_market_is_a_configuration_change(spark, tmp_path, use_config):
    _drop(tmp_path / "landing", NEW_MARKET)

    # Before: the packaged reference data knows neither NOK nor Norway.
    before = load_config(
        environ={
            "LOOPLINE__STORAGE__LANDING_URI": str(tmp_path / "landing"),
            "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake-before"),
        }
    )
    result = ingest.run(spark, DS, before)
    assert result["transactions"]["quarantined_by_reason"]["unknown_currency"] == 3  # no1, no2, x1
    assert _quarantine(spark, Lake(str(tmp_path / "lake-before")))["x2"] == "unknown_country"

    # After: one currency and one country added in the YAML, nothing else.
    def add_norway(ref):
        ref["currencies"]["NOK"] = 0.085
        ref["countries"].append("NO")

    cfg = use_config(_config(tmp_path, add_norway))
    result = ingest.run(spark, DS, cfg)
    tx = result["transactions"]
    assert tx["rows_written"] == 3
    assert {k: v for k, v in tx["quarantined_by_reason"].items() if v} == {
        "unknown_currency": 1,
        "unknown_country": 1,
    }
    lake = Lake(str(tmp_path / "lake"))
    assert _quarantine(spark, lake) == {"x1": "unknown_currency", "x2": "unknown_country"}
    raw = spark.read.parquet(lake.version_uri(tables.RAW_TRANSACTIONS, DS, result["version"])).toPandas()
    by_id = raw.set_index("transaction_id")
    assert by_id.loc["no1", "amount_eur"] == pytest.approx(8.5)
    assert by_id.loc["no2", "amount_eur"] == pytest.approx(21.25)
    assert by_id.loc["no2", "currency"] == "NOK"
    # The raw gate reads the same reference data: the new market passes it.
    gate = check_gate(raw, "raw_transactions", ds=str(DS), params={"min_rows": 1}, persist=False)
    assert gate.success
    # ... which the packaged reference data (no NOK) would fail.
    with pytest.raises(GateFailed, match=r"expect_column_values_to_be_in_set\(currency\): 2 unexpected"):
        check_gate(raw, "raw_transactions", ds=str(DS), params={"min_rows": 1, "currencies": ["EUR"]}, persist=False)


def _rates(landing: Path, day: dt.date, text: str, complete: bool = True) -> None:
    folder = landing / "fx_rates" / f"ds={day}"
    write(folder / "rates.csv", text)
    if complete:
        (folder / "_SUCCESS").touch()


def test_daily_rates_carry_forward_then_quarantine(spark, tmp_path, use_config):
    landing = tmp_path / "landing"
    _drop(
        landing,
        [
            row("u1", currency="USD", amount="100.00"),
            row("g1", currency="GBP", amount="100.00", event_time="2026-03-02T11:00:00Z"),
            row("c1", currency="CHF", amount="100.00", event_time="2026-03-02T12:00:00Z"),
            row("e1", amount="100.00", event_time="2026-03-02T13:00:00Z"),
        ],
    )
    _rates(landing, DS, "currency,rate_to_eur\nCHF,1.05\n")  # today: CHF only
    _rates(landing, DS - dt.timedelta(days=2), "currency,rate_to_eur\nUSD,0.90\nCHF,9.99\n")  # 2 days old: USD
    _rates(landing, DS - dt.timedelta(days=1), "currency,rate_to_eur\nUSD,0.80\n", complete=False)  # no marker
    _rates(landing, DS - dt.timedelta(days=4), "currency,rate_to_eur\nGBP,1.20\n")  # too old

    def daily(ref):
        ref["fx"] = {"source": "daily", "max_age_days": 2}
        ref["currencies"] = {code: None for code in ref["currencies"]}

    cfg = use_config(_config(tmp_path, daily))
    result = ingest.run(spark, DS, cfg)
    assert result["fx"]["rate_days"] == {"EUR": str(DS), "CHF": str(DS), "USD": str(DS - dt.timedelta(days=2))}
    assert "GBP" in result["fx"]["missing"]
    assert "USD from 2026-02-28" in result["fx"]["summary"]
    assert {k: v for k, v in result["transactions"]["quarantined_by_reason"].items() if v} == {"no_fx_rate": 1}
    lake = Lake(str(tmp_path / "lake"))
    assert _quarantine(spark, lake) == {"g1": "no_fx_rate"}
    raw = spark.read.parquet(lake.version_uri(tables.RAW_TRANSACTIONS, DS, result["version"])).toPandas()
    amounts = dict(zip(raw["transaction_id"], raw["amount_eur"], strict=True))
    assert amounts == {"u1": 90.0, "c1": 105.0, "e1": 100.0}
