"""The range backfill's plan: refused ranges, the days a correction recomputes, chunks and progress."""

from __future__ import annotations

import datetime as dt

import pytest

from loopline import backfill
from loopline.config import get_config

D = dt.date(2026, 5, 1)


def day(offset: int) -> dt.date:
    return D + dt.timedelta(days=offset)


def test_start_after_end_is_refused():
    with pytest.raises(backfill.RangeRefused, match="start 2026-05-03 is after end 2026-05-01"):
        backfill.plan_range(day(2), day(0), get_config(), lambda d: True)


def test_days_without_a_drop_are_refused_naming_them():
    delivered = {day(i) for i in range(3)}
    with pytest.raises(backfill.RangeRefused, match=r"2 day\(s\) .* 2026-05-04, 2026-05-05\. The range goes beyond"):
        backfill.plan_range(day(0), day(4), get_config(), delivered.__contains__)
    assert backfill.plan_range(day(0), day(2), get_config(), delivered.__contains__) == [day(0), day(1), day(2)]


def test_a_range_longer_than_max_days_is_refused():
    cfg = get_config().model_copy(update={"backfill": get_config().backfill.model_copy(update={"max_days": 5})})
    with pytest.raises(backfill.RangeRefused, match=r"exceed backfill\.max_days=5"):
        backfill.plan_range(day(0), day(5), cfg, lambda d: True)


def test_dependents_follow_the_chain_of_readers():
    published = [day(i) for i in (-3, 0, 1, 5, 9, 40, 44)]
    # reach 4: day 5 reads day 1 (within 4), day 9 reads day 5; day 40 reads nothing recomputed
    assert backfill.dependents(published, [day(0), day(1)], reach=4) == [day(5), day(9)]
    assert backfill.dependents(published, [day(0)], reach=0) == []
    assert backfill.dependents([], [day(0)], reach=30) == []


def test_chunks_and_progress():
    assert [len(c) for c in backfill.chunks([day(i) for i in range(7)], 3)] == [3, 3, 1]
    # a correction's later days can skip a day without features: one Spark pass covers consecutive days only
    gapped = [day(1), day(2), day(4), day(5), day(6), day(9)]
    assert list(backfill.chunks(gapped, 2)) == [[day(1), day(2)], [day(4), day(5)], [day(6)], [day(9)]]
    progress = backfill.Progress(days_total=10, days_done=4)  # resumed: 4 done before
    assert progress.eta_seconds is None
    progress.day_done(1000)
    assert progress.days_done == 5
    assert progress.rows_done == 1000
    assert progress.eta_seconds == pytest.approx(progress.elapsed * 5, rel=0.5)
    assert "5/10 days" in progress.line(day(4), "x (1/2)")


def test_chunks_after_the_first_hold_about_chunk_rows():
    sized = get_config().backfill.model_copy(update={"chunk_days": 7, "chunk_rows": 100_000, "max_chunk_days": 31})
    assert backfill.chunk_size(sized, 0, 0) == 7  # nothing published yet: chunk_days
    assert backfill.chunk_size(sized, 7, 7 * 20_000) == 5  # 20,000 rows a day
    assert backfill.chunk_size(sized, 7, 7 * 1_000) == 31  # small days: capped
    assert backfill.chunk_size(sized, 7, 7 * 500_000) == 1  # days above the budget: one at a time
    assert backfill.chunk_size(sized, 3, 0) == 31  # empty days
    fixed = sized.model_copy(update={"chunk_rows": 0})
    assert backfill.chunk_size(fixed, 7, 7 * 1_000) == 7
    assert backfill.chunk_size(fixed.model_copy(update={"max_chunk_days": 5}), 0, 0) == 5  # the cap holds for all


def test_fault_point_fires_only_where_asked(monkeypatch):
    monkeypatch.setenv(backfill.FAULT_ENV, f"{day(1)}:after_raw")
    backfill.fault_point(day(0), "after_raw")
    backfill.fault_point(day(1), "after_ingest")
    with pytest.raises(backfill.BackfillFault, match="injected fault at ds=2026-05-02 after_raw"):
        backfill.fault_point(day(1), "after_raw")
