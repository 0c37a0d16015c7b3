"""The ingest's row accounting from the tally Spark observes during the write (no Spark needed)."""

from __future__ import annotations

import pytest

from loopline.landing import FileCheck
from spark_jobs.ingest import kind_counts

# what ingest.row_reasons returns, shortened (building its rules needs a Spark session)
REASONS = ("malformed_row", "bad_is_fraud", "bad_amount", "conflicting_duplicate_id")


def _tally(written: int, duplicates: int, by_reason: dict[str, int], reasons: tuple[str, ...]) -> dict[str, int]:
    tally = {"written": written, "duplicates": duplicates, "quarantined": sum(by_reason.values())}
    return tally | {f"reason_{i}": by_reason.get(reason, 0) for i, reason in enumerate(reasons)}


def test_every_row_read_is_written_dropped_or_quarantined():
    reasons = REASONS
    broken = FileCheck(uri="landing/x.csv", size=10, reason="missing_columns:amount", lines=4)
    counts = kind_counts(_tally(90, 2, {"bad_amount": 3, reasons[-1]: 1}, reasons), reasons, [broken])

    assert counts.rows_read == 90 + 2 + 3 + 1 + 4
    assert counts.quarantined_by_reason == {"bad_amount": 3, "conflicting_duplicate_id": 1, "missing_columns": 4}
    assert (counts.files, counts.files_quarantined) == (1, 1)


def test_a_reason_outside_the_vocabulary_fails_loudly():
    reasons = REASONS
    tally = _tally(5, 0, {"bad_is_fraud": 1}, reasons) | {"quarantined": 2}  # one row under an unknown reason

    with pytest.raises(RuntimeError, match="missing from row_reasons"):
        kind_counts(tally, reasons, [])


def test_a_write_that_reported_no_tally_is_an_error():
    with pytest.raises(RuntimeError, match="no row tally"):
        kind_counts({}, REASONS, [])
