"""The range backfill's ties to the other DAGs, as wired: ``feature_pipeline`` waits (a rescheduling sensor with
the configured timeout) while a range holds its day, before it ingests; ``backfill_range`` re-scores the stale
days only when its form asks, and only after a range that succeeded."""

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
        "timeout": 1234 + 7,  # backfill.daily_wait_seconds, plus a poke: the sensor's own message fails first
        "poke": 7,
        "upstream": ["wait_for_drop"],
        "downstream": ["ingest_drop"],
    }


def test_backfill_range_rescores_only_when_asked_after_a_range_that_succeeded(dagbag):
    dag = dagbag.get_dag("backfill_range")
    rescore = dag.params.get_param("rescore")
    assert rescore.schema["type"] == "boolean"
    assert rescore.value is False
    assert "loopline rescore-stale" in rescore.description
    plan, trigger = dag.get_task("plan_rescore"), dag.get_task("trigger_rescore")
    assert plan.upstream_task_ids == {"backfill_days"}
    assert plan.trigger_rule == "all_success"  # a failed or refused range re-scores nothing
    assert trigger.upstream_task_ids == {"plan_rescore"}
    assert trigger.downstream_task_ids == set()
    assert trigger.partial_kwargs["trigger_dag_id"] == "batch_score"
    assert trigger.partial_kwargs["reset_dag_run"] is True  # the day's run exists: it is cleared, not duplicated
    assert trigger.partial_kwargs["fail_when_dag_is_paused"] is True  # never a silent queue behind a pause


def test_rescore_off_skips_the_rescore(dagbag):
    """Only the re-score tasks run (no Spark): with the form's default both are skipped."""
    dag = dagbag.get_dag("backfill_range").partial_subset(["plan_rescore", "trigger_rescore"], include_upstream=False)
    dagrun = dag.test(run_conf={"start": "2026-01-01", "end": "2026-01-02"})
    states = {ti.task_id: ti.state for ti in dagrun.get_task_instances()}
    assert states == {"plan_rescore": "skipped", "trigger_rescore": "skipped"}
