"""The demo's plan: which days it replays, and the scheduler's preload list stays importable."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

import pytest

from loopline import stack
from loopline.demo import DemoPlan


def test_plan_monitors_the_last_nights_and_trains_before_them():
    plan = DemoPlan(start=dt.date(2026, 1, 1), days=60, stable_nights=3, drifted_nights=3)
    assert plan.end == dt.date(2026, 3, 1)
    assert plan.drift_start == dt.date(2026, 2, 27)  # three drifted nights, the last one yesterday
    assert plan.first_monitored == dt.date(2026, 2, 24)  # three stable nights before them
    assert (plan.end - plan.first_monitored).days + 1 == 6


@pytest.mark.parametrize(("stable", "drifted", "days"), [(0, 3, 60), (3, 0, 60), (5, 5, 10)])
def test_plan_refuses_nights_it_cannot_hold(stable: int, drifted: int, days: int):
    with pytest.raises(ValueError, match="night"):
        DemoPlan(start=dt.date(2026, 1, 1), days=days, stable_nights=stable, drifted_nights=drifted)


def test_scheduler_preloads_the_task_libraries_through_a_forkserver(tmp_path: Path):
    env = stack.airflow_environment(tmp_path)
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    modules = env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",")
    assert modules == list(stack.TASK_PRELOAD_MODULES)
    # The forkserver skips a module that fails to import without a word: a renamed one would cost every task.
    for name in modules:
        importlib.import_module(name)
