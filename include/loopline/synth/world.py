"""The world: a fixed population of customers and merchants derived from the seed and the population size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopline.synth.params import (
    _ATM,
    _BURST_TILT,
    _CARD_TEST_MERCHANTS_PER_COUNTRY,
    _CAT,
    _CAT_ONLINE,
    _CAT_RISK,
    _CAT_WEIGHT,
    _COUNTRY_CURRENCY,
    _COVARIATE_TILT,
    _FOREIGN_SHARE,
    _HOME_SHARE,
    _MAX_USUAL,
    _ONLINE,
    _POS,
    _STREAM_WORLD,
    CATEGORIES,
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    FOREIGN_COUNTRIES,
    HOME_COUNTRIES,
)


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
