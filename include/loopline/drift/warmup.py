"""Warm-up: how many days of lake history each history feature needs, and which still warm up on a reference
(see "Warm-up" in :mod:`loopline.drift`)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from loopline.schemas import NUMERIC_FEATURES

__all__ = ["LABEL_FEATURES", "LONG_WINDOW_FEATURES", "feature_horizons", "warming_features"]


# History features that span the longest window without carrying its name: the customer state behind them
# (last transaction, merchants and countries seen, active days) covers the longest window.
LONG_WINDOW_FEATURES: tuple[str, ...] = (
    "seconds_since_last_txn",
    "is_new_merchant",
    "is_new_country",
    "customer_history_days",
)
LABEL_FEATURES: tuple[str, ...] = ("merchant_risk", "category_risk", "merchant_label_count")


def feature_horizons(
    window_hours: Mapping[str, int], *, risk_window_days: int, label_maturity_days: int
) -> dict[str, int]:
    """Days of lake history each history feature needs before its distribution stops depending on the lake's
    age (features not named need none). ``window_hours`` is ``features.windows`` in hours (``{"30d": 720}``):
    a feature named ``*_<window>`` needs that window; the risk rates count labels reported in
    ``risk_window_days`` before ``ds``, and the labels of a day keep arriving for ``label_maturity_days``."""
    days = {window: max(1, math.ceil(hours / 24)) for window, hours in window_hours.items()}
    horizons = {name: days[window] for window in days for name in NUMERIC_FEATURES if name.endswith(f"_{window}")}
    horizons |= dict.fromkeys(LONG_WINDOW_FEATURES, max(days.values(), default=0))
    horizons |= dict.fromkeys(LABEL_FEATURES, risk_window_days + label_maturity_days)
    return horizons


def warming_features(horizons: Mapping[str, int], lake_start: dt.date, reference_start: dt.date) -> tuple[str, ...]:
    """Features whose window was not yet full on the reference's first day, in ``horizons`` order.

    Once the reference itself sits on a full window, the later days tested against it do too."""
    history_days = (reference_start - lake_start).days
    return tuple(name for name, days in horizons.items() if days > history_days)
