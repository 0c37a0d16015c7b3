"""The training set: lake features joined with the labels known at the cut-off, split by time.

Point in time
    Training for ``cutoff`` C uses what was known at the start of day C: feature partitions of transaction
    days ``[C - window_days, C - 1]`` and labels reported on or before ``C - 1`` (``reported_at < C 00:00
    UTC``). A label reported on C or later is unknown at training time and is never read, so rerunning a
    training for an old cut-off gives the same rows even after more labels arrived (no leakage).

Label maturity (the trade-off)
    Labels arrive 1-30 days after the transaction, frauds sooner (within 20 days in the generator). On a
    recent day most legitimate transactions are still unlabelled while its frauds already are, so keeping
    the labelled rows of recent days would over-represent fraud there (a label-delay bias that inflates
    the fraud rate and skews the holdout, the newest part of the window). A transaction day D is therefore
    used only when it is *mature*: ``C - D >= label_maturity_days``. With the default 30 days every label
    of a mature day is known, but the usable window shrinks by a month (45 configured days keep 16). A
    smaller value (the demo uses about 20) keeps more and fresher days at the price of a small bias: the
    latest legitimate labels of the newest mature days are still missing. Unlabelled rows of mature days
    are excluded and counted in the fingerprint.

Split
    By calendar day over the mature window: holdout = its last ``holdout_days`` days, validation = the
    ``validation_days`` before them, train = the rest back to ``C - window_days``. Days without a committed
    feature partition simply contribute no rows (listed in the fingerprint).

Fingerprint
    What makes a training reproducible and comparable: the feature and label partition versions read
    (``Lake.current_version``), the windows, row and positive counts per split, the label cut-off, and a
    sha256 over the sorted ``transaction_id,label`` pairs.

Reads go through pyarrow directly (no Spark): local folders, or ``s3://`` / ``s3a://`` with pyarrow's
``S3FileSystem`` (credentials from the standard AWS environment, ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` for MinIO).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from loopline import lake as tables
from loopline.lake import Lake, day_range
from loopline.schemas import CATEGORICAL_FEATURES, FEATURE_COLUMNS, NUMERIC_FEATURES

LABEL = "is_fraud"
DS = "ds"  # the transaction day a row came from (ISO date string)
MODEL_FEATURES: tuple[str, ...] = (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES)
LABEL_TABLE_COLUMNS: tuple[str, ...] = ("transaction_id", LABEL, "reported_at")
SPLITS: tuple[str, ...] = ("train", "validation", "holdout")


class TrainingDataError(ValueError):
    """The lake cannot give a usable training set for these arguments (no rows, no positives, bad window)."""


@dataclass(frozen=True)
class DayWindow:
    """An inclusive range of calendar days."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> list[dt.date]:
        return day_range(self.start, self.end) if self.end >= self.start else []

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.start <= day <= self.end

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class SplitPlan:
    """Which calendar days feed which split for a cut-off (pure date arithmetic, no I/O)."""

    cutoff: dt.date
    window: DayWindow
    mature_end: dt.date
    train: DayWindow
    validation: DayWindow
    holdout: DayWindow

    @property
    def immature_days(self) -> list[dt.date]:
        return [day for day in self.window.days if day > self.mature_end]

    @property
    def mature_days(self) -> list[dt.date]:
        return [day for day in self.window.days if day <= self.mature_end]

    def split_of(self, day: dt.date) -> str | None:
        for name in SPLITS:
            if day in getattr(self, name):
                return name
        return None


def plan_splits(
    cutoff: dt.date, window_days: int, validation_days: int, holdout_days: int, label_maturity_days: int
) -> SplitPlan:
    """The day windows of each split; raises :class:`TrainingDataError` when the window cannot hold them."""
    for name, value, minimum in (
        ("window_days", window_days, 1),
        ("validation_days", validation_days, 1),
        ("holdout_days", holdout_days, 1),
        ("label_maturity_days", label_maturity_days, 0),
    ):
        if value < minimum:
            raise TrainingDataError(f"{name} must be >= {minimum}, got {value}")
    window = DayWindow(cutoff - dt.timedelta(days=window_days), cutoff - dt.timedelta(days=1))
    # A day D is mature when cutoff - D >= label_maturity_days; days of the window are <= cutoff - 1 anyway.
    mature_end = min(window.end, cutoff - dt.timedelta(days=label_maturity_days))
    holdout = DayWindow(mature_end - dt.timedelta(days=holdout_days - 1), mature_end)
    validation = DayWindow(holdout.start - dt.timedelta(days=validation_days), holdout.start - dt.timedelta(days=1))
    train = DayWindow(window.start, validation.start - dt.timedelta(days=1))
    if train.end < train.start:
        mature = max(0, (mature_end - window.start).days + 1)
        raise TrainingDataError(
            f"the window leaves no training days: {window_days} days before {cutoff} with label maturity "
            f"{label_maturity_days} days keep {mature} mature day(s), fewer than validation ({validation_days}) + "
            f"holdout ({holdout_days}) + 1; raise --window-days or lower --label-maturity-days"
        )
    return SplitPlan(cutoff, window, mature_end, train, validation, holdout)


@dataclass
class TrainingSet:
    """The three splits (FEATURE_COLUMNS + ``is_fraud`` + ``ds``) and the fingerprint that identifies them."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    fingerprint: dict[str, Any]
    plan: SplitPlan
    extras: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLITS}


# ---------------------------------------------------------------------------------------------------------
# Reading partitions (local or S3)


class _Reader:
    """Reads committed partitions of a lake as pyarrow tables."""

    def __init__(self, lake: Lake):
        self.lake = lake

    def read(self, uri: str, columns: tuple[str, ...], table: str, day: dt.date) -> pa.Table:
        dataset = self.lake.arrow_dataset(uri)
        missing = [name for name in columns if name not in dataset.schema.names]
        if missing:
            raise TrainingDataError(f"{table} ds={day} ({uri}) lacks column(s) {', '.join(missing)}")
        return dataset.to_table(columns=list(columns))


def _to_pandas(tables_: list[pa.Table]) -> pd.DataFrame:
    table = pa.concat_tables(tables_, promote_options="permissive")
    return table.to_pandas()


def _as_utc(values: pd.Series) -> pd.Series:
    values = pd.to_datetime(values)
    return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")


def _versions(lake: Lake, table: str, days: list[dt.date], pin_id: str | None) -> dict[dt.date, str]:
    """The committed versions of ``table`` to read for ``days``: pinned under ``pin_id`` first when given, so the
    lake's sweep cannot delete them while this run reads (the run's ``release_inputs`` lifts the pin)."""
    if pin_id:
        return lake.pin_current(pin_id, table, days)
    found = {day: lake.current_version(table, day) for day in days}
    return {day: version for day, version in found.items() if version}


def _read_labels(
    reader: _Reader, days: list[dt.date], cutoff: dt.date, pin_id: str | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Labels reported before ``cutoff`` (one row per transaction: the latest report wins)."""
    versions: dict[str, str] = {}
    parts = []
    for day, version in sorted(_versions(reader.lake, tables.LABELED_TRANSACTIONS, days, pin_id).items()):
        uri = reader.lake.version_uri(tables.LABELED_TRANSACTIONS, day, version)
        versions[day.isoformat()] = version
        parts.append(reader.read(uri, LABEL_TABLE_COLUMNS, tables.LABELED_TRANSACTIONS, day))
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype="object") for name in LABEL_TABLE_COLUMNS}), versions
    labels = _to_pandas(parts)
    labels["reported_at"] = _as_utc(labels["reported_at"])
    # Partitions are by report day, so this only matters for rows stamped after their partition's day.
    labels = labels[labels["reported_at"] < pd.Timestamp(cutoff, tz="UTC")]
    labels = labels.dropna(subset=[LABEL])
    labels = labels.sort_values(["transaction_id", "reported_at", LABEL], kind="mergesort")
    labels = labels.drop_duplicates("transaction_id", keep="last")  # a corrected verdict replaces the first
    labels[LABEL] = labels[LABEL].astype("int8")
    return labels[["transaction_id", LABEL]], versions


def _sha256(frame: pd.DataFrame) -> str:
    ordered = frame.sort_values("transaction_id", kind="mergesort")
    text = "\n".join(ordered["transaction_id"].astype(str) + "," + ordered[LABEL].astype(int).astype(str))
    return hashlib.sha256(text.encode()).hexdigest()


def build_training_set(
    lake_root: str,
    cutoff: dt.date,
    window_days: int,
    validation_days: int,
    holdout_days: int,
    label_maturity_days: int,
    *,
    max_fraud_rate: float = 1.0,
    pin_id: str | None = None,
    feature_columns: tuple[str, ...] | None = None,
) -> TrainingSet:
    """Read the lake and return the time-split training set for ``cutoff`` (see the module docstring).

    With ``pin_id``, every version read is pinned first (``<lake>/_PINS/``, :meth:`loopline.lake.Lake.pin_current`)
    under that id; the caller releases the pin when the run ends. ``feature_columns`` defaults to
    :data:`loopline.schemas.FEATURE_COLUMNS` (this process's ``features.windows``).

    Raises:
        TrainingDataError (a ValueError): the window cannot hold the splits, a split that must not be
            empty has no rows or no positives, or a split's fraud share is above ``max_fraud_rate`` (a label
            feed that marks far too much as fraud is broken or poisoned; a model trained on it must not
            reach the gate).
    """
    plan = plan_splits(cutoff, window_days, validation_days, holdout_days, label_maturity_days)
    lake = Lake(lake_root)
    reader = _Reader(lake)

    feature_versions: dict[str, str] = {}
    missing_days: list[str] = []
    parts = []
    committed = _versions(lake, tables.FEATURES, list(plan.mature_days), pin_id)
    for day in plan.mature_days:
        if day not in committed:
            missing_days.append(day.isoformat())
            continue
        feature_versions[day.isoformat()] = committed[day]
        uri = lake.version_uri(tables.FEATURES, day, committed[day])
        part = reader.read(uri, feature_columns or FEATURE_COLUMNS, tables.FEATURES, day)
        parts.append(part.append_column(DS, pa.array([day.isoformat()] * part.num_rows, pa.string())))
    if not parts:
        raise TrainingDataError(
            f"no committed feature partitions in {lake_root} for the mature days "
            f"{plan.window.start}..{plan.mature_end} (cutoff {cutoff}, window {window_days} days, "
            f"label maturity {label_maturity_days} days)"
        )
    features = _to_pandas(parts)

    # Labels of window transactions are reported inside the window at the earliest, and before the cutoff.
    labels, label_versions = _read_labels(reader, plan.window.days, cutoff, pin_id)
    rows = features.merge(labels, on="transaction_id", how="left", validate="many_to_one")
    unlabelled = int(rows[LABEL].isna().sum())
    rows = rows[rows[LABEL].notna()].copy()
    rows[LABEL] = rows[LABEL].astype("int8")
    duplicates = int(rows["transaction_id"].duplicated().sum())
    if duplicates:
        raise TrainingDataError(f"{duplicates} transaction id(s) appear in more than one feature row")

    split_of = {day.isoformat(): plan.split_of(day) for day in plan.mature_days}
    rows["_split"] = rows[DS].map(split_of)
    splits = {}
    for name in SPLITS:
        frame = rows[rows["_split"] == name].drop(columns="_split")
        splits[name] = frame.sort_values([DS, "event_time", "transaction_id"], kind="mergesort").reset_index(drop=True)

    summary = {}
    for name in SPLITS:
        frame = splits[name]
        window = getattr(plan, name)
        summary[name] = {
            **window.as_dict(),
            "rows": len(frame),
            "positives": int(frame[LABEL].sum()),
        }
    for name in ("train", "validation", "holdout"):
        if summary[name]["rows"] == 0:
            raise TrainingDataError(
                f"no labelled rows in the {name} split ({summary[name]['start']}..{summary[name]['end']}, "
                f"cutoff {cutoff}): the lake has no labelled features for those days"
            )
        if summary[name]["positives"] == 0:
            raise TrainingDataError(
                f"no positive labels in the {name} split ({summary[name]['start']}..{summary[name]['end']}, "
                f"{summary[name]['rows']} rows, cutoff {cutoff}): widen the window or lower label maturity"
            )
        rate = summary[name]["positives"] / summary[name]["rows"]
        if rate > max_fraud_rate:
            raise TrainingDataError(
                f"labels look broken or poisoned: {rate:.1%} of the {summary[name]['rows']:,} labelled rows in "
                f"the {name} split ({summary[name]['start']}..{summary[name]['end']}) are fraud, above "
                f"training.max_fraud_rate ({max_fraud_rate:.1%}); check labels/labeled_transactions for those "
                "days (reported_at, source files) before training"
            )

    labelled = pd.concat([splits[name][["transaction_id", LABEL]] for name in SPLITS], ignore_index=True)
    fingerprint: dict[str, Any] = {
        "lake": lake_root,
        "cutoff": cutoff.isoformat(),
        "label_cutoff": pd.Timestamp(cutoff, tz="UTC").isoformat(),  # labels with reported_at < this
        "window": plan.window.as_dict(),
        "window_days": window_days,
        "validation_days": validation_days,
        "holdout_days": holdout_days,
        "label_maturity_days": label_maturity_days,
        "mature_end": plan.mature_end.isoformat(),
        "immature_days_excluded": len(plan.immature_days),
        "splits": summary,
        "rows": len(labelled),
        "positives": int(labelled[LABEL].sum()),
        "unlabelled_rows_excluded": unlabelled,
        "missing_feature_days": missing_days,
        "feature_partitions": feature_versions,
        "label_partitions": label_versions,
        "feature_partitions_sha256": hashlib.sha256(json.dumps(feature_versions, sort_keys=True).encode()).hexdigest(),
        "data_sha256": _sha256(labelled),
    }
    return TrainingSet(splits["train"], splits["validation"], splits["holdout"], fingerprint, plan)


def fingerprint_versions(fingerprint: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The lake versions a training set's fingerprint names (table -> ds -> version): what a model's pin holds."""
    return {
        tables.FEATURES: dict(fingerprint.get("feature_partitions") or {}),
        tables.LABELED_TRANSACTIONS: dict(fingerprint.get("label_partitions") or {}),
    }


def reference_sample(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """A seeded random sample (without replacement) of at most ``size`` rows of FEATURE_COLUMNS."""
    size = min(size, len(frame))
    index = np.random.default_rng(seed).choice(len(frame), size=size, replace=False)
    return frame.iloc[np.sort(index)][list(FEATURE_COLUMNS)].reset_index(drop=True)
