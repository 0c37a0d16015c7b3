"""The demo's plan: which days it replays, and the scheduler's preload list stays importable."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

import pytest

from loopline import stack
from loopline.config import load_config
from loopline.demo import DEMO_ENVIRONMENT, DemoPlan
from loopline.training.dataset import plan_splits


def test_plan_monitors_the_last_nights_and_trains_before_them():
    plan = DemoPlan(start=dt.date(2026, 1, 1), days=60, stable_nights=3, drifted_nights=3)
    assert plan.end == dt.date(2026, 3, 1)
    assert plan.drift_start == dt.date(2026, 2, 27)  # three drifted nights, the last one yesterday
    assert plan.first_monitored == dt.date(2026, 2, 24)  # three stable nights before them
    assert (plan.end - plan.first_monitored).days + 1 == 6


def test_first_champion_has_less_history_than_the_retraining():
    cfg = load_config(environ={})
    plan = DemoPlan(start=dt.date(2026, 1, 1))
    first, retrained = (
        plan_splits(
            cutoff,
            window,
            cfg.training.validation_days,
            cfg.training.holdout_days,
            cfg.features.label_maturity_days,
        )
        for cutoff, window in (
            (plan.first_monitored, plan.first_champion_window_days),
            (plan.drift_start + dt.timedelta(days=1), cfg.training.window_days),  # the first drifted night's
        )
    )
    assert len(first.train.days) == 4
    assert len(retrained.train.days) == 19
    # both models' drift references (validation + holdout days) lie in the generated history
    assert first.validation.start >= plan.start


def test_demo_stack_has_no_routine_retraining():
    assert load_config(environ={}).training.schedule == "@weekly"
    assert load_config(environ=DEMO_ENVIRONMENT).training.schedule is None


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


def test_promotion_path_leaves_room_for_maturity_retraining_and_evidence():
    plan = DemoPlan(start=dt.date(2026, 1, 1), days=60, promotion=True, maturity_days=5, evidence_days=2)
    assert plan.drift_start == plan.end - dt.timedelta(days=12)
    assert plan.retrain_night == plan.drift_start + dt.timedelta(days=5)  # the drift night's labels matured
    # the shadow scores the days after its retraining; their labels mature 5 days later, the last night yesterday
    assert plan.evidence_nights() == [plan.end - dt.timedelta(days=1), plan.end]
    assert plan.evidence_nights()[0] - dt.timedelta(days=5) == plan.retrain_night + dt.timedelta(days=1)
    # a shadow deployed later has fewer nights of evidence, one deployed too late none
    assert plan.evidence_nights(plan.retrain_night + dt.timedelta(days=2)) == [plan.end]
    assert plan.evidence_nights(plan.end) == []
    env = plan.environment()
    assert env["LOOPLINE__PROMOTION__POLICY"] == "shadow_first"
    assert env["LOOPLINE__FEATURES__LABEL_MATURITY_DAYS"] == "5"
    # one retraining: the cooldown outlasts every night after the retraining night
    assert int(env["LOOPLINE__DRIFT__COOLDOWN_HOURS"]) > (plan.end - plan.retrain_night).days * 24
    load_config(environ=env)  # a valid configuration
    assert DemoPlan(start=dt.date(2026, 1, 1)).environment() == DEMO_ENVIRONMENT


def test_promotion_path_first_champion_keeps_its_short_history():
    """With the path's short label maturity the first champion still has 4 training days, the retraining of
    the scheduled night many more: the retrained model has something to win with."""
    plan = DemoPlan(start=dt.date(2026, 1, 1), days=60, promotion=True)
    cfg = load_config(environ=plan.environment())
    first, retrained = (
        plan_splits(
            cutoff,
            window,
            cfg.training.validation_days,
            cfg.training.holdout_days,
            cfg.features.label_maturity_days,
        )
        for cutoff, window in (
            (plan.first_monitored, plan.first_window_days),
            (plan.retrain_night + dt.timedelta(days=1), cfg.training.window_days),  # cut-off of the retraining
        )
    )
    assert len(first.train.days) == 4
    assert len(retrained.train.days) == 34
    assert first.train.start >= plan.start
    assert DemoPlan(start=dt.date(2026, 1, 1)).first_window_days == 35  # the default path is unchanged


def test_postgres_source_needs_the_stacks_own_database(monkeypatch, tmp_path):
    """With the predictions database outside the stack, --source postgres stops before writing anything."""
    from loopline.config import get_config
    from loopline.demo import plan

    monkeypatch.setattr(plan.stack, "embedded_pg", lambda: None)
    files = tmp_path / "source-export"
    files.mkdir()
    with pytest.raises(RuntimeError, match="embedded PostgreSQL"):
        plan.write_source_tables(get_config(), files, print)
    assert files.exists()  # the generated days are kept
