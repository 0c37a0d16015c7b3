"""What is written: transaction ids, label report times, the CSV text of transactions, truth and labels, and
partitions written atomically with their ``_SUCCESS`` marker.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS
from loopline.synth.params import (
    _DAY,
    _STREAM_IDS,
    _STREAM_LABELS,
    MAX_FRAUD_LABEL_DELAY_DAYS,
    MAX_LABEL_DELAY_DAYS,
    TRUTH_COLUMNS,
)
from loopline.synth.simulate import _Day
from loopline.synth.world import _World

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
