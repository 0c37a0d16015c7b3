"""The range backfill's ties to the other DAGs, as wired: ``feature_pipeline`` waits (a rescheduling sensor with
the configured timeout) while a range holds its day, before it ingests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import json, runpy
task = runpy.run_path("dags/feature_pipeline.py")["dag"].get_task("wait_for_range_backfill")
print(json.dumps({"mode": task.mode, "timeout": task.timeout, "poke": task.poke_interval,
                  "upstream": sorted(task.upstream_task_ids), "downstream": sorted(task.downstream_task_ids)}))
"""


def test_feature_pipeline_waits_for_a_range_holding_the_day_before_ingesting():
    settings = {"LOOPLINE__BACKFILL__DAILY_WAIT_SECONDS": "1234", "LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS": "7"}
    env = {**os.environ, **settings}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    wait = json.loads(result.stdout.strip().splitlines()[-1])
    assert wait == {
        "mode": "reschedule",  # no worker slot held while a range runs
        "timeout": 1234,  # backfill.daily_wait_seconds
        "poke": 7,
        "upstream": ["wait_for_drop"],
        "downstream": ["ingest_drop"],
    }
