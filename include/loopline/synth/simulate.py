"""One simulated day: ordinary traffic, compromised-card bursts and card-testing episodes, and the fraud draw."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from loopline.synth.params import (
    _AMOUNT_FREE,
    _ATM,
    _BONUS_BURST,
    _BONUS_CARD_TEST,
    _BURST_RATE,
    _CARD_TEST_RATE,
    _CAT_OFFSET,
    _COVARIATE_AMOUNT,
    _DAY,
    _INTERCEPT,
    _MAX_EXTRA_SHARE,
    _POS,
    _STREAM_TX,
    _SURGE_FACTOR,
    _W_AMOUNT,
    _W_CNP,
    _W_FOREIGN,
    _W_NEW_MERCHANT,
    _W_NIGHT,
    HOME_COUNTRIES,
)
from loopline.synth.world import _World


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
