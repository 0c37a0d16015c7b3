"""Column contracts: the landing zone (what upstream writes) and the lake tables Loopline writes.

Plain Python data so that the Spark jobs, the GX suites, the generator and the tests agree on one list.
"""

from __future__ import annotations

# Landing contract (README, "The landing contract"): header row, these columns, in this order.
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

CHANNELS: tuple[str, ...] = ("pos", "online", "atm")
CARD_PRESENT_VALUES: tuple[str, ...] = ("true", "false")
# Reference rates to EUR for normalising amounts; a currency outside this table is quarantined.
FX_TO_EUR: dict[str, float] = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.04, "SEK": 0.088, "PLN": 0.23}
MAX_AMOUNT_EUR = 100_000.0  # anything above is treated as a data error, not a purchase
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
# Quarantine: the row as it arrived (strings), the file it came from, and why it was rejected.
QUARANTINE_COLUMNS: tuple[str, ...] = ("source_file", "reason", "raw_record")

# Feature table: numeric model inputs, categorical model inputs, and identifiers carried along.
ID_COLUMNS: tuple[str, ...] = ("transaction_id", "customer_id", "merchant_id", "event_time")
CATEGORICAL_FEATURES: tuple[str, ...] = ("channel", "merchant_category", "country")
NUMERIC_FEATURES: tuple[str, ...] = (
    "amount_eur",
    "log_amount",
    "hour_of_day",
    "day_of_week",
    "is_night",
    "card_present",
    "is_foreign",
    "cnt_1h",
    "sum_1h",
    "cnt_24h",
    "sum_24h",
    "cnt_7d",
    "sum_7d",
    "cnt_30d",
    "sum_30d",
    "avg_amount_30d",
    "amount_to_avg_30d",
    "amount_zscore_30d",
    "seconds_since_last_txn",
    "is_new_merchant",
    "is_new_country",
    "customer_history_days",
    "merchant_risk",
    "category_risk",
    "merchant_label_count",
)
# Integer-typed numeric features as the feature job writes them (int; merchant_label_count is a long);
# every other numeric feature is a double.
INT_FEATURES: tuple[str, ...] = (
    "hour_of_day",
    "day_of_week",
    "is_night",
    "card_present",
    "is_foreign",
    "cnt_1h",
    "cnt_24h",
    "cnt_7d",
    "cnt_30d",
    "is_new_merchant",
    "is_new_country",
    "customer_history_days",
)
LONG_FEATURES: tuple[str, ...] = ("merchant_label_count",)
FEATURE_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, *CATEGORICAL_FEATURES, *NUMERIC_FEATURES)
