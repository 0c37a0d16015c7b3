"""Reference data of the landing contract: accepted currencies and their EUR rates for a day, channels,
countries and the amount limit, from the ``reference`` section of the configuration and, with
``reference.fx.source: daily``, the landing's daily ``fx_rates`` input.

The daily input is one folder per day like the other landing inputs: ``fx_rates/ds=YYYY-MM-DD/*.csv``
with a header ``currency,rate_to_eur`` and a ``_SUCCESS`` marker. A currency without a rate on ``ds``
takes its newest rate of the ``reference.fx.max_age_days`` days before; a currency with none is left out,
so its rows are quarantined as ``no_fx_rate``. Plain Python: no Spark, no Airflow.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import logging
from dataclasses import dataclass, field

from loopline.config import ReferenceConfig

log = logging.getLogger(__name__)

FX_KIND = "fx_rates"
FX_COLUMNS = ("currency", "rate_to_eur")
MAX_RATES_BYTES = 1 << 20  # a rates table has a line per currency


class FxInputError(ValueError):
    """A daily rates file breaks its contract (header, a code, a rate): the message names the file and line."""


@dataclass(frozen=True)
class DayRates:
    """The EUR rates usable on one day and where each came from (``{code: day of the rate}``)."""

    ds: dt.date
    rates: dict[str, float]
    rate_days: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()  # accepted currencies without a usable rate: their rows are quarantined

    def describe(self) -> str:
        stale = {c: d for c, d in self.rate_days.items() if d != str(self.ds)}
        parts = [f"{len(self.rates)} rate(s) for ds={self.ds}"]
        if stale:
            parts.append("carried forward: " + ", ".join(f"{c} from {d}" for c, d in sorted(stale.items())))
        if self.missing:
            parts.append("no rate (rows quarantined as no_fx_rate): " + ", ".join(self.missing))
        return "; ".join(parts)


def parse_rates(text: str, source: str, accepted: set[str]) -> dict[str, float]:
    """``currency,rate_to_eur`` rows of one rates file; codes outside ``accepted`` are ignored (logged)."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if tuple(header) != FX_COLUMNS:
        raise FxInputError(f"{source}: header must be {','.join(FX_COLUMNS)}, got {','.join(header) or 'nothing'}")
    out: dict[str, float] = {}
    for line, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise FxInputError(f"{source} line {line}: expected 2 fields, got {len(row)}")
        code = row[0].strip().upper()
        try:
            rate = float(row[1])
        except ValueError:
            raise FxInputError(f"{source} line {line}: rate {row[1]!r} of {code} is not a number") from None
        if not rate > 0 or rate != rate or rate == float("inf"):
            raise FxInputError(f"{source} line {line}: rate of {code} must be a positive number, got {row[1]!r}")
        if code in accepted:
            out[code] = rate
        else:
            log.info("%s line %d: %s is not in reference.currencies: ignored", source, line, code)
    return out


def static_rates(reference: ReferenceConfig) -> dict[str, float]:
    """The configured rates of ``reference.currencies`` (EUR is 1.0)."""
    rates = {code: float(rate) for code, rate in reference.currencies.items() if rate is not None}
    if "EUR" in reference.currencies:
        rates["EUR"] = 1.0
    return rates


def rates_for_day(reference: ReferenceConfig, ds: dt.date, landing=None) -> DayRates:
    """The EUR rate of every accepted currency usable on ``ds``.

    ``static``: the configured rates. ``daily``: the ``fx_rates`` drops of ``ds`` and the ``max_age_days``
    days before (only complete ones, with a ``_SUCCESS`` marker), newest first per currency; EUR is 1.0.
    ``landing`` is a :class:`loopline.landing.Landing` (needed for ``daily``).
    """
    accepted = set(reference.currencies)
    if reference.fx.source == "static":
        rates = static_rates(reference)
        return DayRates(ds, rates, {c: str(ds) for c in rates})
    if landing is None:
        raise ValueError("reference.fx.source is daily: rates_for_day needs the landing")
    rates: dict[str, float] = {"EUR": 1.0} if "EUR" in accepted else {}
    rate_days = {c: str(ds) for c in rates}
    for back in range(reference.fx.max_age_days + 1):
        day = str(ds - dt.timedelta(days=back))
        if not landing.is_complete(FX_KIND, day):
            continue
        for uri, _size in landing.data_files(FX_KIND, day):
            with landing.open_binary(uri) as stream:
                data = stream.read(MAX_RATES_BYTES + 1)
            if len(data) > MAX_RATES_BYTES:
                raise FxInputError(f"{uri}: larger than {MAX_RATES_BYTES} bytes, not a rates table")
            text = (gzip.decompress(data) if uri.endswith(".gz") else data).decode("utf-8-sig")
            for code, rate in parse_rates(text, uri, accepted).items():
                if code not in rates:
                    rates[code], rate_days[code] = rate, day
    missing = tuple(sorted(accepted - set(rates)))
    return DayRates(ds, rates, rate_days, missing)
