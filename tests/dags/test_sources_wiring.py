"""feature_pipeline's first tasks follow ``sources``: the landing sensor by default; with a PostgreSQL input, a
watermark sensor and the extraction before the ingest (the landing sensor kept for the landing inputs). Whatever
the sources, the wait for a range backfill holding the day comes after the waits, before the day's first write."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import json, runpy
dag = runpy.run_path("dags/feature_pipeline.py")["dag"]
print(json.dumps({t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}))
"""


def _edges(env: dict[str, str]) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_landing_sources_keep_the_marker_sensor():
    edges = _edges({})
    assert edges["wait_for_drop"] == ["wait_for_range_backfill"]
    assert edges["wait_for_range_backfill"] == ["ingest_drop"]
    assert "extract_sources" not in edges


def test_a_postgres_source_waits_for_its_day_then_extracts():
    source = "{kind: postgres, conn_id: bank_db, table: core.payments, event_time_column: event_time}"
    edges = _edges({"LOOPLINE__SOURCES__TRANSACTIONS": source})
    assert edges["wait_for_source_day"] == ["wait_for_range_backfill"]
    assert edges["wait_for_drop"] == ["wait_for_range_backfill"]  # labels still arrive as a landing drop
    assert edges["wait_for_range_backfill"] == ["extract_sources"]  # the extraction writes the day's drop
    assert edges["extract_sources"] == ["ingest_drop"]


def test_an_s3_source_waits_for_its_export_marker_then_copies():
    source = "{kind: s3, prefix: 's3://exports/labels/date={ds}'}"
    edges = _edges({"LOOPLINE__SOURCES__LABELS": source})
    assert edges["wait_for_s3_export"] == ["wait_for_range_backfill"]
    assert edges["wait_for_drop"] == ["wait_for_range_backfill"]
    assert edges["wait_for_range_backfill"] == ["extract_sources"]
    assert edges["extract_sources"] == ["ingest_drop"]
