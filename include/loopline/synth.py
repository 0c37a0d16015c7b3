"""Synthetic landing zone for card-transaction fraud.

:func:`generate` writes what an upstream payments system would drop into the landing zone, one folder per
day and dataset::

    out/transactions/ds=2026-01-05/part-00000.csv[.gz]   transactions that happened on that day
    out/transactions/ds=2026-01-05/_SUCCESS
    out/labels/ds=2026-01-05/part-00000.csv[.gz]         fraud/legit verdicts reported on that day
    out/labels/ds=2026-01-05/_SUCCESS

and, outside the landing zone, the ground truth a benchmark needs (the exact fraud probability each row was
drawn with, so the best achievable AUC is known)::

    truth/ds=2026-01-05/part-00000.csv[.gz]

The world is a fixed population of customers (home country, typical amount, usual merchants, active hours,
online habit, activity rate) and merchants (category, channel, country, risk), both derived from ``seed``
and the population size only. Every day is simulated from its own RNGs seeded with
``(seed, stream, date.toordinal())``, so a day's rows do not depend on the window it is generated in, days
before ``drift_start`` are identical to a run without drift, and output is byte-for-byte reproducible.

Fraud is ``Bernoulli(p)`` with ``p`` a logistic function of interpretable signals: night-time, amount far
above the customer's typical amount, a merchant outside the customer's usual set, a foreign merchant,
card-not-present, category and merchant risk, plus a latent "compromised card" episode that produces a
quick burst of extra transactions (visible as velocity). Times are written in UTC; the population is
European, and the generator treats the UTC hour as the local hour so "night" is learnable from
``event_time`` alone.

Labels arrive 1-30 days after the transaction (fraud sooner, within 20 days). Only labels reported inside
the generated window are written. Memory stays bounded: a day is generated, written and dropped; only the
label report times and verdicts of the last 30 days are kept (9 bytes a row), and their transaction ids are
regenerated from the per-day id stream when the labels are due.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS

__all__ = [
    "DRIFT_KINDS",
    "LABEL_COLUMNS",
    "TRANSACTION_COLUMNS",
    "TRUTH_COLUMNS",
    "GenerateSummary",
    "generate",
]

DRIFT_KINDS: tuple[str, ...] = ("covariate", "new_pattern", "fraud_surge")

# The landing contract itself lives in loopline.schemas; the generator writes exactly that.
TRUTH_COLUMNS: tuple[str, ...] = ("transaction_id", "fraud_probability", "is_fraud", "drifted")

CURRENCIES: tuple[str, ...] = ("EUR", "USD", "GBP")
CHANNELS: tuple[str, ...] = ("pos", "online", "atm")  # the synthetic market's (reference.channels accepts them)
HOME_COUNTRIES: tuple[str, ...] = ("DE", "FR", "NL", "ES", "IT", "BE", "AT")
FOREIGN_COUNTRIES: tuple[str, ...] = ("GB", "US", "IE", "LU", "CH", "CN", "TR", "AE", "TH", "BR", "NG")
COUNTRIES: tuple[str, ...] = HOME_COUNTRIES + FOREIGN_COUNTRIES

MAX_LABEL_DELAY_DAYS = 30
MAX_FRAUD_LABEL_DELAY_DAYS = 20

_DAY = 86_400
_POS, _ONLINE, _ATM = 0, 1, 2

# Category table: name, share of spend events, share of merchants selling online, log-amount offset from
# the customer's typical amount, fraud risk (logit). cash_withdrawal merchants are ATMs.
_CATEGORY_TABLE: tuple[tuple[str, float, float, float, float], ...] = (
    ("grocery", 0.22, 0.03, -0.35, -0.7),
    ("restaurants", 0.15, 0.10, -0.05, -0.4),
    ("fuel", 0.08, 0.00, 0.35, -0.2),
    ("pharmacy", 0.05, 0.05, -0.25, -0.6),
    ("fashion", 0.09, 0.40, 0.45, 0.0),
    ("entertainment", 0.06, 0.55, 0.05, 0.0),
    ("electronics", 0.05, 0.55, 1.20, 0.7),
    ("travel", 0.04, 0.80, 1.45, 0.5),
    ("gaming", 0.03, 1.00, -0.20, 0.8),
    ("digital_goods", 0.04, 1.00, -0.60, 0.9),
    ("jewelry", 0.01, 0.15, 1.70, 1.1),
    ("cash_withdrawal", 0.08, 0.00, 0.70, 0.3),
)
CATEGORIES: tuple[str, ...] = tuple(row[0] for row in _CATEGORY_TABLE)
_CAT = {name: i for i, name in enumerate(CATEGORIES)}
_CAT_WEIGHT = np.array([row[1] for row in _CATEGORY_TABLE]) / sum(row[1] for row in _CATEGORY_TABLE)
_CAT_ONLINE = np.array([row[2] for row in _CATEGORY_TABLE])
_CAT_OFFSET = np.array([row[3] for row in _CATEGORY_TABLE])
_CAT_RISK = np.array([row[4] for row in _CATEGORY_TABLE])

_HOME_SHARE = np.array([0.30, 0.22, 0.12, 0.14, 0.14, 0.05, 0.03])
_FOREIGN_SHARE = np.array([0.22, 0.22, 0.10, 0.08, 0.06, 0.12, 0.06, 0.05, 0.03, 0.03, 0.03])
_COUNTRY_CURRENCY = np.array(
    [0] * len(HOME_COUNTRIES) + [{"GB": 2, "IE": 0, "LU": 0}.get(c, 1) for c in FOREIGN_COUNTRIES]
)

# Fraud mechanism (logit scale). Kept in one place so the docs, tests and benchmark agree on it.
_INTERCEPT = -7.0
_W_NIGHT = 1.6  # 00:00-05:59
_W_AMOUNT = 1.0  # per unit of log(amount / typical) beyond _AMOUNT_FREE
_AMOUNT_FREE = 0.8  # up to ~2.2x the customer's typical amount is unremarkable
_W_NEW_MERCHANT = 1.2
_W_FOREIGN = 1.1
_W_CNP = 0.9
_BONUS_BURST = 3.5  # latent: the card is compromised
_BONUS_CARD_TEST = 6.0  # latent: the new_pattern card-testing ring

# Episode rates, as a fraction of the day's transactions.
_BURST_RATE = 0.0012
_SURGE_FACTOR = 5.0
_CARD_TEST_RATE = 0.0015
_MAX_EXTRA_SHARE = 0.2  # bursts never crowd out more than this share of ordinary traffic

_COVARIATE_AMOUNT = float(np.log(1.8))
_COVARIATE_TILT = {"electronics": 3.0, "digital_goods": 3.0, "gaming": 2.0, "travel": 1.5}
_BURST_TILT = {
    "electronics": 4.0,
    "digital_goods": 4.0,
    "gaming": 3.0,
    "jewelry": 5.0,
    "travel": 2.0,
    "cash_withdrawal": 2.0,
    "grocery": 0.2,
    "pharmacy": 0.2,
    "fuel": 0.5,
}
_CARD_TEST_MERCHANTS_PER_COUNTRY = 2
_MAX_USUAL = 8

# Independent RNG streams: a change in how one is consumed never shifts the others.
_STREAM_WORLD, _STREAM_TX, _STREAM_IDS, _STREAM_LABELS = 0, 1, 2, 3


@dataclass(frozen=True)
class GenerateSummary:
    """What :func:`generate` wrote.

    ``transactions``/``frauds`` count every generated transaction and its true label; ``labels`` counts the
    label rows written (those reported inside the window).
    """

    days: int
    transactions: int
    frauds: int
    labels: int
    landing: Path
    truth: Path


@dataclass(frozen=True, eq=False)
class _Pool:
    """Weighted set of merchants to draw from with inverse-CDF lookups."""

    members: np.ndarray
    cdf: np.ndarray

    @classmethod
    def of(cls, members: np.ndarray, weights: np.ndarray) -> _Pool:
        w = weights[members]
        cdf = np.cumsum(w) / w.sum()
        return cls(members=members.astype(np.int64), cdf=cdf)

    def draw(self, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cdf, u, side="right")
        return self.members[np.minimum(pos, len(self.members) - 1)]


@dataclass(frozen=True, eq=False)
class _World:
    """Customer and merchant profiles, fixed per seed and size."""

    home: np.ndarray  # country index
    mu: np.ndarray  # log of the typical amount
    sigma: np.ndarray
    hour_center: np.ndarray
    hour_spread: np.ndarray
    p_usual: np.ndarray
    p_online: np.ndarray
    weight: np.ndarray  # activity, sums to 1
    usual: np.ndarray  # (customers, _MAX_USUAL) merchant indices, -1 padded
    n_usual: np.ndarray
    m_cat: np.ndarray
    m_channel: np.ndarray
    m_country: np.ndarray
    m_risk: np.ndarray
    card_test: np.ndarray  # (len(HOME_COUNTRIES), per country) merchants used only by new_pattern
    # pools[(variant, kind, home)]; variant "base" or "covariate"
    pools: dict[tuple[str, str, int], _Pool]
    burst_pool: _Pool
    customer_ids: np.ndarray  # object arrays of pre-formatted CSV fragments
    merchant_head: np.ndarray  # "merchant_id,merchant_category"
    merchant_tail: np.ndarray  # "currency,channel,country"


def _tilted(m_weight: np.ndarray, m_cat: np.ndarray, tilt: dict[str, float]) -> np.ndarray:
    factor = np.ones(len(CATEGORIES))
    for name, f in tilt.items():
        factor[_CAT[name]] = f
    return m_weight * factor[m_cat]


def _build_world(seed: int, customers: int, merchants: int) -> _World:
    """Draw the customer and merchant population; depends only on the arguments."""
    rng = np.random.default_rng([seed, _STREAM_WORLD, customers, merchants])
    n_home = len(HOME_COUNTRIES)

    # Merchants: category, channel, country, popularity, risk.
    m_cat = rng.choice(len(CATEGORIES), size=merchants, p=_CAT_WEIGHT)
    online = rng.random(merchants) < _CAT_ONLINE[m_cat]
    m_channel = np.where(online, _ONLINE, _POS)
    m_channel[m_cat == _CAT["cash_withdrawal"]] = _ATM
    # Online shops are often abroad; shops and ATMs mostly sit in the customers' countries.
    abroad = rng.random(merchants) < np.where(online, 0.45, 0.07)
    m_country = np.where(
        abroad,
        n_home + rng.choice(len(FOREIGN_COUNTRIES), size=merchants, p=_FOREIGN_SHARE),
        rng.choice(n_home, size=merchants, p=_HOME_SHARE),
    )
    popularity = rng.lognormal(0.0, 1.0, merchants)
    cat_total = np.bincount(m_cat, weights=popularity, minlength=len(CATEGORIES))
    m_weight = _CAT_WEIGHT[m_cat] * popularity / cat_total[m_cat]
    risky = rng.random(merchants) < 0.03
    m_risk = _CAT_RISK[m_cat] + rng.normal(0.0, 0.2, merchants) + np.where(risky, 1.2, 0.0)

    # new_pattern merchants: new digital-goods shops in each home country, unused before the drift.
    n_ct = n_home * _CARD_TEST_MERCHANTS_PER_COUNTRY
    card_test = (merchants + np.arange(n_ct)).reshape(n_home, _CARD_TEST_MERCHANTS_PER_COUNTRY)
    m_cat = np.concatenate([m_cat, np.full(n_ct, _CAT["digital_goods"])])
    m_channel = np.concatenate([m_channel, np.full(n_ct, _ONLINE)])
    m_country = np.concatenate([m_country, np.repeat(np.arange(n_home), _CARD_TEST_MERCHANTS_PER_COUNTRY)])
    m_risk = np.concatenate([m_risk, np.zeros(n_ct)])
    m_weight = np.concatenate([m_weight, np.zeros(n_ct)])
    regular = np.arange(merchants)

    pools: dict[tuple[str, str, int], _Pool] = {}
    for variant, weights in (
        ("base", m_weight),
        ("covariate", _tilted(m_weight, m_cat, _COVARIATE_TILT)),
    ):
        for h in range(n_home):
            on, off = m_channel[regular] == _ONLINE, m_channel[regular] != _ONLINE
            home_here = m_country[regular] == h
            for kind, mask in (
                ("online_domestic", on & home_here),
                ("online_any", on),
                ("offline_domestic", off & home_here),
                ("offline_foreign", off & ~home_here),
            ):
                members = regular[mask] if mask.any() else regular
                pools[(variant, kind, h)] = _Pool.of(members, weights)
    burst_pool = _Pool.of(regular, _tilted(m_weight, m_cat, _BURST_TILT))

    # Customers.
    home = rng.choice(n_home, size=customers, p=_HOME_SHARE)
    mu = rng.normal(np.log(28.0), 0.45, customers)
    sigma = rng.uniform(0.3, 0.6, customers)
    owl = rng.random(customers) < 0.06
    hour_center = np.where(
        owl, rng.uniform(21.0, 25.5, customers), np.clip(rng.normal(14.0, 2.0, customers), 8.0, 20.0)
    )
    hour_spread = rng.uniform(1.5, 3.5, customers)
    p_usual = rng.beta(9.0, 2.5, customers)
    p_online = rng.beta(2.0, 6.0, customers)
    weight = rng.gamma(2.0, 1.0, customers)
    weight /= weight.sum()

    n_usual = rng.integers(3, _MAX_USUAL + 1, customers)
    usual = np.full((customers, _MAX_USUAL), -1, dtype=np.int64)
    draws = rng.random((customers, _MAX_USUAL))
    online_slot = rng.random(customers) < p_online
    online_draws = rng.random(customers)
    for h in range(n_home):
        rows = np.flatnonzero(home == h)
        usual[rows] = pools[("base", "offline_domestic", h)].draw(draws[rows])
        # Online-minded customers keep one web shop (domestic or not) among their regulars.
        pick = rows[online_slot[rows]]
        usual[pick, 0] = pools[("base", "online_any", h)].draw(online_draws[pick])
    usual[np.arange(_MAX_USUAL)[None, :] >= n_usual[:, None]] = -1

    customer_ids = np.array([f"cus-{i:07d}" for i in range(customers)], dtype=object)
    merchant_head = np.array([f"mer-{i:06d},{CATEGORIES[c]}" for i, c in enumerate(m_cat.tolist())], dtype=object)
    merchant_tail = np.array(
        [
            f"{CURRENCIES[_COUNTRY_CURRENCY[co]]},{CHANNELS[ch]},{COUNTRIES[co]}"
            for ch, co in zip(m_channel.tolist(), m_country.tolist(), strict=True)
        ],
        dtype=object,
    )
    return _World(
        home=home,
        mu=mu,
        sigma=sigma,
        hour_center=hour_center,
        hour_spread=hour_spread,
        p_usual=p_usual,
        p_online=p_online,
        weight=weight,
        usual=usual,
        n_usual=n_usual,
        m_cat=m_cat,
        m_channel=m_channel,
        m_country=m_country,
        m_risk=m_risk,
        card_test=card_test,
        pools=pools,
        burst_pool=burst_pool,
        customer_ids=customer_ids,
        merchant_head=merchant_head,
        merchant_tail=merchant_tail,
    )


@dataclass(frozen=True, eq=False)
class _Day:
    """One simulated day, rows sorted by event time."""

    sec: np.ndarray  # seconds since midnight UTC
    cust: np.ndarray
    merch: np.ndarray
    cents: np.ndarray
    card_present: np.ndarray
    micro_p: np.ndarray  # fraud probability in millionths (the exact value is micro_p / 1e6)
    fraud: np.ndarray


def _episode_sizes(rng: np.random.Generator, n_total: int, regime: str | None) -> tuple[np.ndarray, int]:
    """Sizes of compromised-card bursts followed by card-testing episodes, and how many are bursts."""
    burst_rate = _BURST_RATE * (_SURGE_FACTOR if regime == "fraud_surge" else 1.0)
    bursts = 3 + rng.poisson(4.0, rng.poisson(n_total * burst_rate))
    tests = np.zeros(0, dtype=np.int64)
    if regime == "new_pattern":
        tests = 4 + rng.poisson(3.0, rng.poisson(n_total * _CARD_TEST_RATE))
    sizes = np.concatenate([bursts, tests]).astype(np.int64)
    # Keep whole episodes while they fit the budget, so tiny days stay mostly ordinary traffic.
    keep = int(np.count_nonzero(np.cumsum(sizes) <= int(n_total * _MAX_EXTRA_SHARE)))
    return sizes[:keep], min(keep, len(bursts))


def _within_episode_offsets(rng: np.random.Generator, sizes: np.ndarray, mean_gap: float) -> np.ndarray:
    """Seconds since each episode's first transaction, for all episode rows laid end to end."""
    total = int(sizes.sum())
    gaps = rng.exponential(mean_gap, total)
    first = np.cumsum(sizes) - sizes
    gaps[first] = 0.0
    run = np.cumsum(gaps)
    return run - np.repeat(run[first], sizes)


def _simulate_day(world: _World, seed: int, day: dt.date, n_total: int, regime: str | None) -> _Day:
    """Draw one day's transactions and their fraud outcome."""
    rng = np.random.default_rng([seed, _STREAM_TX, day.toordinal()])
    covariate = regime == "covariate"
    variant = "covariate" if covariate else "base"
    n_customers = len(world.weight)

    sizes, n_burst_episodes = _episode_sizes(rng, n_total, regime)
    n = n_total - int(sizes.sum())

    # Ordinary traffic: who, when, where.
    cust = rng.choice(n_customers, size=n, p=world.weight)
    hours = world.hour_center[cust] + world.hour_spread[cust] * rng.standard_normal(n)
    sec = np.floor(hours * 3600.0).astype(np.int64) % _DAY
    shift = 0.15 if covariate else 0.0
    usual = rng.random(n) < world.p_usual[cust] - shift
    slot = (world.n_usual[cust] * rng.random(n) ** 1.6).astype(np.int64)
    merch = world.usual[cust, slot]
    goes_online = rng.random(n) < world.p_online[cust] + (0.35 if covariate else 0.0)
    stays_home = rng.random(n)
    pick = rng.random(n)
    home = world.home[cust]
    for h in range(len(HOME_COUNTRIES)):
        here = ~usual & (home == h)
        groups = (
            ("online_domestic", here & goes_online & (stays_home < 0.6)),
            ("online_any", here & goes_online & (stays_home >= 0.6)),
            ("offline_domestic", here & ~goes_online & (stays_home < 0.92)),
            ("offline_foreign", here & ~goes_online & (stays_home >= 0.92)),
        )
        for kind, mask in groups:
            merch[mask] = world.pools[(variant, kind, h)].draw(pick[mask])
    log_amount = (
        world.mu[cust]
        + _CAT_OFFSET[world.m_cat[merch]]
        + world.sigma[cust] * rng.standard_normal(n)
        + (_COVARIATE_AMOUNT if covariate else 0.0)
    )
    bonus = np.zeros(n)
    cents_fixed = np.full(n, -1, dtype=np.int64)

    # Compromised cards: a quick burst of extra spending at risky merchants, often at night.
    burst_sizes, test_sizes = sizes[:n_burst_episodes], sizes[n_burst_episodes:]
    if len(burst_sizes):
        victims = rng.choice(n_customers, size=len(burst_sizes), p=world.weight)
        night_start = rng.random(len(burst_sizes)) < 0.5
        start = np.where(
            night_start, rng.uniform(0, 6 * 3600, len(burst_sizes)), rng.uniform(0, _DAY, len(burst_sizes))
        )
        b_sec = np.repeat(start, burst_sizes) + _within_episode_offsets(rng, burst_sizes, 360.0)
        b_cust = np.repeat(victims, burst_sizes)
        b_merch = world.burst_pool.draw(rng.random(len(b_cust)))
        b_log = (
            world.mu[b_cust]
            + _CAT_OFFSET[world.m_cat[b_merch]]
            + rng.normal(0.9, 0.6, len(b_cust))
            + (_COVARIATE_AMOUNT if covariate else 0.0)
        )
        cust = np.concatenate([cust, b_cust])
        sec = np.concatenate([sec, np.minimum(b_sec.astype(np.int64), _DAY - 1)])
        merch = np.concatenate([merch, b_merch])
        log_amount = np.concatenate([log_amount, b_log])
        bonus = np.concatenate([bonus, np.full(len(b_cust), _BONUS_BURST)])
        cents_fixed = np.concatenate([cents_fixed, np.full(len(b_cust), -1, dtype=np.int64)])

    # new_pattern card testing: small daytime charges at new domestic digital-goods shops, spread over
    # the day so the 1h velocity the old model relies on stays low.
    if len(test_sizes):
        victims = rng.choice(n_customers, size=len(test_sizes), p=world.weight)
        t_cust = np.repeat(victims, test_sizes)
        rows = len(t_cust)
        t_merch = world.card_test[world.home[t_cust], rng.integers(0, world.card_test.shape[1], rows)]
        cust = np.concatenate([cust, t_cust])
        sec = np.concatenate([sec, rng.integers(8 * 3600, 20 * 3600, rows)])
        merch = np.concatenate([merch, t_merch])
        log_amount = np.concatenate([log_amount, np.zeros(rows)])
        bonus = np.concatenate([bonus, np.full(rows, _BONUS_CARD_TEST)])
        cents_fixed = np.concatenate([cents_fixed, rng.integers(50, 501, rows)])

    channel = world.m_channel[merch]
    # Card-present for shops and ATMs, except a few manually keyed shop payments.
    card_present = (channel == _ATM) | ((channel == _POS) & (rng.random(len(cust)) >= 0.03))
    amount = np.clip(np.exp(log_amount), 0.5, 25_000.0)
    cents = np.rint(amount * 100.0).astype(np.int64)
    atm = channel == _ATM
    cents[atm] = np.maximum(np.rint(amount[atm] / 10.0), 1).astype(np.int64) * 1000  # notes only
    cents = np.where(cents_fixed >= 0, cents_fixed, np.maximum(cents, 1))

    # The fraud mechanism.
    night = sec < 6 * 3600
    excess = np.clip(np.log(cents / 100.0) - world.mu[cust] - _AMOUNT_FREE, 0.0, 4.0)
    new_merchant = ~(world.usual[cust] == merch[:, None]).any(axis=1)
    foreign = world.m_country[merch] != world.home[cust]
    logit = (
        _INTERCEPT
        + _W_NIGHT * night
        + _W_AMOUNT * excess
        + _W_NEW_MERCHANT * new_merchant
        + _W_FOREIGN * foreign
        + _W_CNP * ~card_present
        + world.m_risk[merch]
        + bonus
    )
    # Round to the 6 decimals written to truth, and draw with exactly that value.
    micro_p = np.rint(1e6 / (1.0 + np.exp(-logit))).astype(np.int64)
    fraud = rng.random(len(cust)) < micro_p / 1e6

    order = np.argsort(sec, kind="stable")
    return _Day(
        sec=sec[order],
        cust=cust[order],
        merch=merch[order],
        cents=cents[order],
        card_present=card_present[order],
        micro_p=micro_p[order],
        fraud=fraud[order],
    )


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# Where the 32 hex digits go in the 36-character 8-4-4-4-12 layout.
_UUID_DIGITS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _transaction_ids(key: Sequence[int], day: dt.date, n: int, select: np.ndarray | None = None) -> np.ndarray:
    """The day's transaction ids (UUID version 4 layout), regenerable from (key, day, n) alone.

    ``key`` holds everything that makes the day's rows what they are (seed, population, regime), so runs
    with different settings never reuse an id for a different transaction. ``select`` (a boolean mask over
    the n rows) formats only those ids, which keeps label look-ups cheap.
    """
    rng = np.random.default_rng([*key, _STREAM_IDS, day.toordinal(), n])
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16)
    raw = raw[select] if select is not None else raw.copy()
    n = len(raw)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    nibbles = np.empty((n, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_DIGITS] = _HEX[nibbles]
    return text.view("S36").ravel().astype("U36")


def _report_times(seed: int, day: dt.date, day_index: int, sec: np.ndarray, fraud: np.ndarray) -> np.ndarray:
    """When each transaction's label is reported, in seconds since the window's first midnight."""
    rng = np.random.default_rng([seed, _STREAM_LABELS, day.toordinal()])
    n = len(sec)
    fraud_delay = 1.0 + (MAX_FRAUD_LABEL_DELAY_DAYS - 1) * rng.beta(1.3, 3.0, n)
    legit_delay = 1.0 + (MAX_LABEL_DELAY_DAYS - 1) * rng.random(n)
    delay = np.rint(np.where(fraud, fraud_delay, legit_delay) * _DAY).astype(np.int64)
    delay = np.clip(delay, _DAY, MAX_LABEL_DELAY_DAYS * _DAY)
    return day_index * _DAY + sec + delay


@cache
def _clock() -> np.ndarray:
    """Every second of a day as ``HH:MM:SS``, so formatting times is a lookup."""
    return np.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(_DAY)], dtype=object)


def _transactions_csv(world: _World, day: dt.date, ids: np.ndarray, rows: _Day) -> str:
    stamp = f"{day.isoformat()}T"
    flags = np.array(["false", "true"], dtype=object)
    cents = rows.cents.tolist()
    lines = [
        f"{tx},{stamp}{t}Z,{c},{head},{a // 100}.{a % 100:02d},{tail},{cp}"
        for tx, t, c, head, a, tail, cp in zip(
            ids.tolist(),
            _clock()[rows.sec].tolist(),
            world.customer_ids[rows.cust].tolist(),
            world.merchant_head[rows.merch].tolist(),
            cents,
            world.merchant_tail[rows.merch].tolist(),
            flags[rows.card_present.astype(np.int64)].tolist(),
            strict=True,
        )
    ]
    return _csv(TRANSACTION_COLUMNS, lines)


def _truth_csv(ids: np.ndarray, rows: _Day, drifted: bool) -> str:
    flag = "1" if drifted else "0"
    lines = [
        f"{tx},{p // 1_000_000}.{p % 1_000_000:06d},{f},{flag}"
        for tx, p, f in zip(ids.tolist(), rows.micro_p.tolist(), rows.fraud.astype(np.int64).tolist(), strict=True)
    ]
    return _csv(TRUTH_COLUMNS, lines)


def _labels_csv(day: dt.date, ids: np.ndarray, report_ts: np.ndarray, fraud: np.ndarray) -> str:
    stamp = f"{day.isoformat()}T"
    order = np.lexsort((ids, report_ts))
    lines = [
        f"{tx},{f},{stamp}{t}Z"
        for tx, f, t in zip(
            ids[order].tolist(),
            fraud[order].astype(np.int64).tolist(),
            _clock()[report_ts[order] % _DAY].tolist(),
            strict=True,
        )
    ]
    return _csv(LABEL_COLUMNS, lines)


def _csv(columns: Sequence[str], lines: list[str]) -> str:
    body = "\n".join(lines)
    return ",".join(columns) + "\n" + (body + "\n" if lines else "")


def _write_partition(folder: Path, text: str, *, compress: bool, marker: bool) -> None:
    """Replace the folder's part file; the ``_SUCCESS`` marker goes last, after the data is closed."""
    folder.mkdir(parents=True, exist_ok=True)
    success = folder / "_SUCCESS"
    # Drop the old marker first so nobody trusts it while the data underneath is being replaced.
    success.unlink(missing_ok=True)
    name = "part-00000.csv.gz" if compress else "part-00000.csv"
    for stale in folder.glob("part-*"):
        if stale.name != name:
            stale.unlink()
    # Hidden temp name: Spark and glob("part-*") readers skip it until the atomic rename.
    tmp = folder / f".{name}.tmp"
    data = text.encode("ascii")
    with open(tmp, "wb") as raw:
        if compress:
            # mtime=0 and no file name keep the gzip header byte-stable; level 3 is faster than 6.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=3) as gz:
                gz.write(data)
        else:
            raw.write(data)
    os.replace(tmp, folder / name)
    if marker:
        success.write_bytes(b"")


def _is_within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _validate(
    start: dt.date,
    days: int,
    transactions_per_day: int,
    seed: int,
    drift_start: dt.date | None,
    drift_kind: str | None,
    customers: int | None,
) -> None:
    def _count(name: str, value: object, minimum: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

    if isinstance(start, dt.datetime) or not isinstance(start, dt.date):
        raise ValueError(f"start must be a datetime.date (not a datetime), got {start!r}")
    _count("days", days, 1)
    _count("transactions_per_day", transactions_per_day, 1)
    _count("seed", seed, 0)
    if customers is not None:
        _count("customers", customers, 1)
    if drift_kind is not None and drift_kind not in DRIFT_KINDS:
        raise ValueError(f"unknown drift_kind {drift_kind!r}; valid kinds: {', '.join(DRIFT_KINDS)}")
    if (drift_start is None) != (drift_kind is None):
        raise ValueError(
            "drift_start and drift_kind go together: give both to simulate drift, or neither "
            f"(got drift_start={drift_start!r}, drift_kind={drift_kind!r})"
        )
    if drift_start is not None and (isinstance(drift_start, dt.datetime) or not isinstance(drift_start, dt.date)):
        raise ValueError(f"drift_start must be a datetime.date (not a datetime), got {drift_start!r}")


def generate(
    start: dt.date,
    days: int,
    out: Path,
    *,
    transactions_per_day: int = 5000,
    seed: int = 7,
    drift_start: dt.date | None = None,
    drift_kind: str | None = None,
    truth_out: Path | None = None,
    customers: int | None = None,
    compress: bool = False,
) -> GenerateSummary:
    """Write ``days`` days of transactions and labels under ``out`` and the ground truth under ``truth_out``.

    Args:
        start: first day of the window.
        days: number of consecutive days (>= 1).
        out: landing-zone root; ``transactions/`` and ``labels/`` are created under it.
        transactions_per_day: rows in each day's transactions file (exactly this many).
        seed: fixes the customer/merchant population and every day's draws.
        drift_start: first day (inclusive) simulated under ``drift_kind``; may lie outside the window.
        drift_kind: one of :data:`DRIFT_KINDS`.
        truth_out: where the truth files go; defaults to ``out.parent / "truth"``. Must not overlap ``out``.
        customers: population size; defaults to ``max(500, transactions_per_day // 4)``.
        compress: write ``part-00000.csv.gz`` (deterministic gzip headers) instead of ``part-00000.csv``.

    Returns:
        Counts of what was written and where.

    Raises:
        ValueError: an argument is out of range or inconsistent; the message says which and why.
    """
    _validate(start, days, transactions_per_day, seed, drift_start, drift_kind, customers)
    out = Path(out)
    truth = Path(truth_out) if truth_out is not None else out.parent / "truth"
    if _is_within(truth.resolve(), out.resolve()) or _is_within(out.resolve(), truth.resolve()):
        raise ValueError(f"truth_out ({truth}) must lie outside the landing zone ({out}) and not contain it")

    n_customers = customers if customers is not None else max(500, transactions_per_day // 4)
    n_merchants = min(20_000, max(1000, transactions_per_day // 2))
    world = _build_world(int(seed), int(n_customers), n_merchants)

    # Label state of the last 30 days: (day, id key, n rows, report times, verdicts). Ids are regenerated.
    pending: deque[tuple[dt.date, tuple[int, ...], int, np.ndarray, np.ndarray]] = deque()
    transactions = frauds = labels = 0
    for index in range(days):
        day = start + dt.timedelta(days=index)
        regime = drift_kind if drift_start is not None and day >= drift_start else None
        rows = _simulate_day(world, int(seed), day, int(transactions_per_day), regime)
        regime_code = 0 if regime is None else 1 + DRIFT_KINDS.index(regime)
        id_key = (int(seed), int(n_customers), int(transactions_per_day), regime_code)
        ids = _transaction_ids(id_key, day, len(rows.sec))
        partition = f"ds={day.isoformat()}"
        _write_partition(
            out / "transactions" / partition,
            _transactions_csv(world, day, ids, rows),
            compress=compress,
            marker=True,
        )
        _write_partition(truth / partition, _truth_csv(ids, rows, regime is not None), compress=compress, marker=False)

        # Labels reported today, for transactions of the previous 30 days inside the window.
        while pending and (day - pending[0][0]).days > MAX_LABEL_DELAY_DAYS:
            pending.popleft()
        due_ids, due_ts, due_fraud = [], [], []
        for earlier, earlier_key, n_earlier, report_ts, verdict in pending:
            due = report_ts // _DAY == index
            if due.any():
                due_ids.append(_transaction_ids(earlier_key, earlier, n_earlier, due))
                due_ts.append(report_ts[due])
                due_fraud.append(verdict[due])
        label_ids = np.concatenate(due_ids) if due_ids else np.zeros(0, dtype="U36")
        label_ts = np.concatenate(due_ts) if due_ts else np.zeros(0, dtype=np.int64)
        label_fraud = np.concatenate(due_fraud) if due_fraud else np.zeros(0, dtype=bool)
        _write_partition(
            out / "labels" / partition,
            _labels_csv(day, label_ids, label_ts, label_fraud),
            compress=compress,
            marker=True,
        )

        report_ts = _report_times(int(seed), day, index, rows.sec, rows.fraud)
        pending.append((day, id_key, len(rows.sec), report_ts, rows.fraud))
        transactions += len(rows.sec)
        frauds += int(rows.fraud.sum())
        labels += len(label_ids)

    return GenerateSummary(days=days, transactions=transactions, frauds=frauds, labels=labels, landing=out, truth=truth)
