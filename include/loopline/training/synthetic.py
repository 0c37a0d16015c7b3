"""A synthetic *feature* lake for trainer tests and benchmarks (no Spark, no landing zone).

:func:`write_synthetic_lake` writes ``features/ds=D`` and ``labels/labeled_transactions/ds=R`` partitions in
the lake's versioned layout (``run=<version>/part-00000.parquet`` + ``_SUCCESS``, then a commit), with the
column types Spark's feature job writes and a learnable fraud signal. Labels are partitioned by the day they
were reported, 1-30 days after the transaction (frauds within 20), like the generator's.

The full pipeline (``loopline generate`` + ``feature_pipeline``) is the real thing; this exists so the
trainer can be tested and measured in seconds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopline import lake as tables
from loopline.lake import Lake
from loopline.schemas import FEATURE_COLUMNS, INT_FEATURES, LONG_FEATURES

CATEGORIES = {
    "channel": ("pos", "online", "atm"),
    "merchant_category": ("grocery", "fuel", "restaurants", "fashion", "travel", "electronics", "digital_goods"),
    "country": ("DE", "FR", "NL", "ES", "IT", "GB", "US", "NG"),
}
_CATEGORY_RISK = {"electronics": 0.8, "digital_goods": 1.0, "travel": 0.5}
_LABEL_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("customer_id", pa.string()),
        ("merchant_id", pa.string()),
        ("merchant_category", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("is_fraud", pa.int32()),
        ("reported_at", pa.timestamp("us", tz="UTC")),
    ]
)


def write_partition(
    lake: Lake, table: str, day: dt.date | str, frame: pd.DataFrame | pa.Table, version: str = "v1", files: int = 1
):
    """Write ``frame`` as a committed partition version (what a Spark writer + publish leave behind)."""
    folder = Path(lake.version_uri(table, day, version))
    folder.mkdir(parents=True, exist_ok=True)
    data = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    # Like Spark's output: several files, so readers can split the partition across tasks.
    step = max(1, -(-data.num_rows // files))
    for index, start in enumerate(range(0, max(data.num_rows, 1), step)):
        pq.write_table(data.slice(start, step), folder / f"part-{index:05d}.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    lake.commit(table, day, version)
    return folder


def feature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast a frame holding FEATURE_COLUMNS to the types Spark writes (ids/categoricals as strings)."""
    out = frame[list(FEATURE_COLUMNS)].copy()
    for name in INT_FEATURES:
        out[name] = out[name].astype("int32")
    for name in LONG_FEATURES:
        out[name] = out[name].astype("int64")
    out["event_time"] = pd.to_datetime(out["event_time"], utc=True).astype("datetime64[us, UTC]")
    return out


def synthetic_day(day: dt.date, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One day of synthetic features and each row's true fraud probability."""
    rng = np.random.default_rng([seed, day.toordinal()])
    n = rows
    channel = rng.choice(CATEGORIES["channel"], n, p=[0.55, 0.35, 0.10])
    category = rng.choice(CATEGORIES["merchant_category"], n)
    country = rng.choice(CATEGORIES["country"], n, p=[0.5, 0.1, 0.1, 0.08, 0.08, 0.06, 0.05, 0.03])
    hour = rng.integers(0, 24, n)
    is_night = (hour <= 5).astype(int)
    avg = rng.lognormal(3.5, 0.6, n)
    ratio = rng.lognormal(0.0, 0.7, n)
    amount = np.round(avg * ratio, 2) + 0.01
    is_foreign = (~np.isin(country, ("DE", "FR", "NL", "ES", "IT"))).astype(int)
    card_present = ((channel != "online") & (rng.random(n) < 0.9)).astype(int)
    is_new_merchant = (rng.random(n) < 0.2).astype(int)
    is_new_country = (is_foreign & (rng.random(n) < 0.5)).astype(int)
    cnt_1h = rng.poisson(0.3, n)
    cnt_24h = cnt_1h + rng.poisson(1.5, n)
    cnt_7d = cnt_24h + rng.poisson(8, n)
    cnt_30d = cnt_7d + rng.poisson(25, n)
    merchant_risk = rng.beta(1, 40, n)
    category_risk = np.array([0.01 + 0.02 * _CATEGORY_RISK.get(c, 0.0) for c in category])
    logit = (
        -6.0
        + 1.4 * is_night
        + 1.1 * np.log(ratio)
        + 1.2 * is_new_merchant
        + 0.9 * is_foreign
        + 0.8 * (channel == "online")
        + np.array([_CATEGORY_RISK.get(c, 0.0) for c in category])
        + 25.0 * merchant_risk
        + 0.5 * np.minimum(cnt_1h, 4)
    )
    probability = 1.0 / (1.0 + np.exp(-logit))
    seconds = hour * 3600 + rng.integers(0, 3600, n)
    event_time = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    std = avg * 0.5
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{day:%Y%m%d}-{i:07d}" for i in range(n)],
            "customer_id": [f"c{v:05d}" for v in rng.integers(0, max(10, n // 4), n)],
            "merchant_id": [f"m{v:05d}" for v in rng.integers(0, max(10, n // 2), n)],
            "event_time": event_time,
            "channel": channel,
            "merchant_category": category,
            "country": country,
            "amount_eur": amount,
            "log_amount": np.log1p(amount),
            "hour_of_day": hour,
            "day_of_week": np.full(n, (day.isoweekday() % 7) + 1),
            "is_night": is_night,
            "card_present": card_present,
            "is_foreign": is_foreign,
            "cnt_1h": cnt_1h,
            "sum_1h": cnt_1h * avg,
            "cnt_24h": cnt_24h,
            "sum_24h": cnt_24h * avg,
            "cnt_7d": cnt_7d,
            "sum_7d": cnt_7d * avg,
            "cnt_30d": cnt_30d,
            "sum_30d": cnt_30d * avg,
            "avg_amount_30d": avg,
            "amount_to_avg_30d": amount / avg,
            "amount_zscore_30d": (amount - avg) / std,
            "seconds_since_last_txn": np.minimum(rng.exponential(20000, n), 30 * 86400.0),
            "is_new_merchant": is_new_merchant,
            "is_new_country": is_new_country,
            "customer_history_days": rng.integers(0, 90, n),
            "merchant_risk": merchant_risk,
            "category_risk": category_risk,
            "merchant_label_count": rng.poisson(30, n),
        }
    )
    return feature_frame(frame), probability


@dataclass(frozen=True)
class SyntheticLake:
    root: str
    days: int
    transactions: int
    frauds: int
    labels: int


def write_synthetic_lake(
    root: str | Path,
    start: dt.date,
    days: int,
    *,
    rows_per_day: int = 1000,
    seed: int = 0,
    labels_until: dt.date | None = None,
) -> SyntheticLake:
    """Write ``days`` committed feature partitions from ``start`` and the label partitions of every report day
    from ``start`` to ``labels_until`` (default: the last day), as the ingest would have."""
    lake = Lake(str(root))
    last = start + dt.timedelta(days=days - 1)
    labels_until = labels_until or last
    rng = np.random.default_rng([seed, 99])
    label_parts = []
    transactions = frauds = 0
    for index in range(days):
        day = start + dt.timedelta(days=index)
        frame, probability = synthetic_day(day, rows_per_day, seed)
        write_partition(lake, tables.FEATURES, day, frame)
        fraud = rng.random(len(frame)) < probability
        delay_days = np.where(fraud, 1 + 19 * rng.beta(1.3, 3.0, len(frame)), 1 + 29 * rng.random(len(frame)))
        reported = frame["event_time"] + pd.to_timedelta(np.rint(delay_days * 86400), unit="s")
        label_parts.append(
            pd.DataFrame(
                {
                    "transaction_id": frame["transaction_id"],
                    "customer_id": frame["customer_id"],
                    "merchant_id": frame["merchant_id"],
                    "merchant_category": frame["merchant_category"],
                    "event_time": frame["event_time"],
                    "is_fraud": fraud.astype("int32"),
                    "reported_at": reported,
                }
            )
        )
        transactions += len(frame)
        frauds += int(fraud.sum())
    labels = pd.concat(label_parts, ignore_index=True)
    labels["report_day"] = labels["reported_at"].dt.date
    written = 0
    for offset in range((labels_until - start).days + 1):
        day = start + dt.timedelta(days=offset)
        part = labels[labels["report_day"] == day].drop(columns="report_day")
        table = pa.Table.from_pandas(part, _LABEL_SCHEMA, preserve_index=False)
        write_partition(lake, tables.LABELED_TRANSACTIONS, day, table)
        written += len(part)
    return SyntheticLake(str(root), days, transactions, frauds, written)
