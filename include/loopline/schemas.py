"""Column contracts: the landing zone (what upstream writes) and the lake tables Loopline writes.

Plain Python data so that the Spark jobs, the GX suites, the generator and the tests agree on one list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Landing contract (docs/architecture.md, "The landing contract"): header row, these columns, in this order.
TRANSACTION_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "event_time",
    "customer_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "channel",
    "country",
    "card_present",
)
LABEL_COLUMNS: tuple[str, ...] = ("transaction_id", "is_fraud", "reported_at")

# Reference data (currencies and their EUR rates, channels, countries, the amount limit) is configuration:
# the ``reference`` section of loopline.yaml, read through loopline.reference.
CARD_PRESENT_VALUES: tuple[str, ...] = ("true", "false")
MAX_FIELD_CHARS = 256  # longer values are a runaway quote or a blob, never an id, a name or a timestamp

# Raw lake table (typed, one partition per ds).
RAW_TRANSACTION_TYPES: dict[str, str] = {
    "transaction_id": "string",
    "event_time": "timestamp",
    "customer_id": "string",
    "merchant_id": "string",
    "merchant_category": "string",
    "amount": "double",
    "currency": "string",
    "amount_eur": "double",
    "channel": "string",
    "country": "string",
    "card_present": "boolean",
    "source_file": "string",
}
RAW_LABEL_TYPES: dict[str, str] = {
    "transaction_id": "string",
    "is_fraud": "int",
    "reported_at": "timestamp",
    "source_file": "string",
}

# Feature table: numeric model inputs, categorical model inputs, and identifiers carried along. The velocity
# columns depend on ``features.windows``, so the lists are built from the configuration here, in one place:
# :func:`feature_schema` for a given window list, and the module attributes ``NUMERIC_FEATURES``,
# ``INT_FEATURES``, ``LONG_FEATURES`` and ``FEATURE_COLUMNS`` for this process's configuration.
ID_COLUMNS: tuple[str, ...] = ("transaction_id", "customer_id", "merchant_id", "event_time")
CATEGORICAL_FEATURES: tuple[str, ...] = ("channel", "merchant_category", "country")
_LEADING_FEATURES: tuple[str, ...] = (
    "amount_eur",
    "log_amount",
    "hour_of_day",
    "day_of_week",
    "is_night",
    "card_present",
    "is_foreign",
)
_TRAILING_FEATURES: tuple[str, ...] = (
    "seconds_since_last_txn",
    "is_new_merchant",
    "is_new_country",
    "customer_history_days",
    "merchant_risk",
    "category_risk",
    "merchant_label_count",
)
_INT_FIXED: tuple[str, ...] = (
    "hour_of_day",
    "day_of_week",
    "is_night",
    "card_present",
    "is_foreign",
    "is_new_merchant",
    "is_new_country",
    "customer_history_days",
)


@dataclass(frozen=True)
class FeatureSchema:
    """The feature table's columns for one list of windows.

    ``numeric``: numeric model inputs; ``ints``: those the feature job writes as int (``longs``: as long;
    every other numeric feature is a double); ``columns``: identifiers, categorical and numeric features.
    """

    windows: tuple[str, ...]
    long_window: str
    numeric: tuple[str, ...]
    ints: tuple[str, ...]
    longs: tuple[str, ...]

    @property
    def categorical(self) -> tuple[str, ...]:
        return CATEGORICAL_FEATURES

    @property
    def model_inputs(self) -> tuple[str, ...]:
        return (*CATEGORICAL_FEATURES, *self.numeric)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*ID_COLUMNS, *CATEGORICAL_FEATURES, *self.numeric)

    @property
    def count_columns(self) -> tuple[str, ...]:
        return tuple(f"cnt_{w}" for w in self.windows)

    @property
    def sum_columns(self) -> tuple[str, ...]:
        return tuple(f"sum_{w}" for w in self.windows)

    @property
    def average_columns(self) -> tuple[str, ...]:
        """``avg_amount_<long>``, ``amount_to_avg_<long>``, ``amount_zscore_<long>``."""
        w = self.long_window
        return (f"avg_amount_{w}", f"amount_to_avg_{w}", f"amount_zscore_{w}")


def feature_schema(windows: Sequence[str]) -> FeatureSchema:
    """The feature columns computed for ``windows`` (``features.windows``, already validated by the config).

    Per window ``cnt_<w>`` (int) and ``sum_<w>`` (double), in the configured order; the longest day window
    ``L`` names ``avg_amount_L``, ``amount_to_avg_L`` and ``amount_zscore_L``.
    """
    windows = tuple(windows)
    days = {w: int(w[:-1]) for w in windows if w.endswith("d")}
    if not days:
        raise ValueError(f"features.windows {list(windows)} has no day window (e.g. '30d')")
    long_window = max(days, key=days.__getitem__)
    velocity = tuple(name for w in windows for name in (f"cnt_{w}", f"sum_{w}"))
    averages = (f"avg_amount_{long_window}", f"amount_to_avg_{long_window}", f"amount_zscore_{long_window}")
    numeric = (*_LEADING_FEATURES, *velocity, *averages, *_TRAILING_FEATURES)
    ints = (*_INT_FIXED, *(f"cnt_{w}" for w in windows))
    return FeatureSchema(windows, long_window, numeric, ints, ("merchant_label_count",))


def active_feature_schema() -> FeatureSchema:
    """:func:`feature_schema` of this process's configuration (``get_config().features.windows``)."""
    from loopline.config import get_config

    return feature_schema(get_config().features.windows)


_ACTIVE_ATTRIBUTES = {
    "NUMERIC_FEATURES": lambda schema: schema.numeric,
    "INT_FEATURES": lambda schema: schema.ints,
    "LONG_FEATURES": lambda schema: schema.longs,
    "FEATURE_COLUMNS": lambda schema: schema.columns,
}


def __getattr__(name: str):  # PEP 562: the window-dependent lists, from the configuration
    if name in _ACTIVE_ATTRIBUTES:
        return _ACTIVE_ATTRIBUTES[name](active_feature_schema())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
