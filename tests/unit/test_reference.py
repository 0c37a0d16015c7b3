"""Reference data from the configuration: validation names the key, daily rates parse strictly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from loopline.config import DEFAULT_CONFIG, ConfigError, load_config
from loopline.landing import Landing
from loopline.reference import FxInputError, parse_rates, rates_for_day, static_rates

DS = dt.date(2026, 3, 2)


def _load(tmp_path: Path, mutate):
    tree = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mutate(tree["reference"])
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_config(path, environ={})


def test_packaged_reference_data():
    reference = load_config(environ={}).reference
    assert static_rates(reference)["USD"] == 0.92
    assert static_rates(reference)["EUR"] == 1.0
    assert reference.channels == ["pos", "online", "atm"]
    assert "DE" in reference.countries


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["currencies"].update(usd=0.9), r"reference\.currencies: .*upper-case ISO-4217"),
        (lambda r: r["currencies"].update(NOK=-1), r"reference\.currencies: .*must be positive"),
        (lambda r: r["currencies"].update(NOK=None), r"reference: .*fx\.source is static but currencies \['NOK'\]"),
        (lambda r: r.update(countries=["Norway"]), r"reference\.countries: .*alpha-2"),
        (lambda r: r.update(channels=["POS"]), r"reference\.channels: .*lower case"),
        (lambda r: r["fx"].update(max_age_days=-1), r"reference\.fx\.max_age_days"),
        (lambda r: r["fx"].update(source="weekly"), r"reference\.fx\.source"),
    ],
)
def test_bad_reference_data_names_the_key(tmp_path, mutate, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, mutate)


def test_rates_files_are_parsed_strictly():
    assert parse_rates("currency,rate_to_eur\nusd, 0.9\nXXX,2\n", "f.csv", {"USD"}) == {"USD": 0.9}
    with pytest.raises(FxInputError, match=r"f\.csv: header must be currency,rate_to_eur"):
        parse_rates("code,rate\nUSD,0.9\n", "f.csv", {"USD"})
    with pytest.raises(FxInputError, match=r"f\.csv line 2: rate 'abc' of USD is not a number"):
        parse_rates("currency,rate_to_eur\nUSD,abc\n", "f.csv", {"USD"})
    with pytest.raises(FxInputError, match=r"line 3: rate of GBP must be a positive number"):
        parse_rates("currency,rate_to_eur\nUSD,1\nGBP,0\n", "f.csv", {"USD", "GBP"})


def test_a_missing_rates_day_uses_the_last_rate_up_to_max_age(tmp_path):
    reference = _load(
        tmp_path, lambda r: r.update(fx={"source": "daily", "max_age_days": 1}, currencies={"EUR": 1.0, "USD": None})
    ).reference
    landing_root = tmp_path / "landing"
    old = landing_root / "fx_rates" / f"ds={DS - dt.timedelta(days=1)}"
    old.mkdir(parents=True)
    (old / "rates.csv").write_text("currency,rate_to_eur\nUSD,0.91\n")
    (old / "_SUCCESS").touch()
    rates = rates_for_day(reference, DS, Landing(str(landing_root)))
    assert rates.rates == {"EUR": 1.0, "USD": 0.91}
    assert rates.rate_days["USD"] == str(DS - dt.timedelta(days=1))
    later = rates_for_day(reference, DS + dt.timedelta(days=1), Landing(str(landing_root)))
    assert later.missing == ("USD",)
    assert "no rate (rows quarantined as no_fx_rate): USD" in later.describe()
