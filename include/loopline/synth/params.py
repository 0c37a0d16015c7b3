"""The generator's fixed parameters: drift kinds, the market (currencies, channels, countries, categories),
label delays, the fraud mechanism's weights, the episode rates and the independent RNG streams.
"""

from __future__ import annotations

import numpy as np

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
