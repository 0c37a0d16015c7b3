"""The generator's entry point, :func:`generate`: it checks the arguments, then generates, writes and drops one
day at a time.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loopline.synth.output import (
    _labels_csv,
    _report_times,
    _transaction_ids,
    _transactions_csv,
    _truth_csv,
    _write_partition,
)
from loopline.synth.params import _DAY, DRIFT_KINDS, MAX_LABEL_DELAY_DAYS
from loopline.synth.simulate import _simulate_day
from loopline.synth.world import _build_world


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
