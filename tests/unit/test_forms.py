"""Trigger forms: Airflow rejects a bad conf before the run exists, and the tasks honour what was chosen."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from airflow.sdk.exceptions import AirflowSkipException, ParamValidationError

from loopline.config import get_config
from loopline.orchestration import forms


def _validated(params, conf):
    """What Airflow does with a trigger's conf: each value checked against its Param's schema, then all."""
    params.update(conf)
    return params.validate()


@pytest.mark.parametrize(
    ("build", "bad"),
    [
        (lambda cfg: forms.score_params(cfg), {"model_version": 0}),
        (lambda cfg: forms.score_params(cfg), {"model_version": "latest"}),
        (lambda cfg: forms.score_params(cfg), {"model_alias": "production"}),
        (lambda cfg: forms.drift_params(cfg), {"dry_run": "yes"}),
        (lambda cfg: forms.drift_params(cfg), {"cooldown_hours": -1}),
        (lambda cfg: forms.feature_params(), {"force_reingest": "no"}),
        (lambda cfg: forms.backfill_params(), {"start": "2026-13-01", "end": "2026-01-31"}),
        (lambda cfg: forms.backfill_params(), {"start": "2026-01-01", "end": "last week"}),
        (lambda cfg: forms.backfill_params(), {"cascade": "yes"}),
        (lambda cfg: forms.backfill_params(), {"rescore": "yes"}),
    ],
)
def test_a_bad_conf_is_rejected_before_anything_runs(build, bad):
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(build(get_config()))
    with pytest.raises(ParamValidationError):
        _validated(params, bad)


def test_good_confs_validate():
    from airflow.sdk.definitions.param import ParamsDict

    cfg = get_config()
    assert _validated(ParamsDict(forms.score_params(cfg)), {"model_version": 3})["model_version"] == 3
    assert _validated(ParamsDict(forms.drift_params(cfg)), {"dry_run": True})["dry_run"] is True
    assert _validated(ParamsDict(forms.feature_params()), {})["force_reingest"] is True
    chosen = _validated(ParamsDict(forms.backfill_params()), {"start": "2026-01-01", "end": "2026-01-31"})
    assert (chosen["start"], chosen["end"], chosen["cascade"]) == ("2026-01-01", "2026-01-31", True)
    assert chosen["rescore"] is False  # re-scoring stays an explicit choice


class _Client:
    """Stands in for the MLflow client: the resolvers are replaced."""


def test_batch_score_scores_the_version_the_form_names(monkeypatch):
    from loopline import scoring
    from loopline.orchestration import scoring_tasks

    asked = []

    def by_alias(client, name, alias):
        asked.append(("alias", alias))
        versions = {"champion": 7, "challenger": 8}  # no shadow: the challenger shadows
        if alias not in versions:
            raise scoring.NoModel(f"no {alias}")
        version = versions[alias]
        return scoring.ModelRef(name=name, version=version, run_id=f"run{version}", alias=alias)

    def by_version(client, name, version):
        asked.append(("version", version))
        return scoring.ModelRef(name=name, version=version, run_id=f"run{version}", alias=f"v{version}")

    monkeypatch.setattr(scoring, "resolve_model", by_alias)
    monkeypatch.setattr(scoring, "resolve_version", by_version)
    monkeypatch.setattr(scoring_tasks, "_client", _Client)
    run = scoring_tasks.resolve_models.function

    pinned = run(params={"model_version": 3, "model_alias": "champion", "shadow": False})
    assert pinned["champion"]["version"] == 3
    assert pinned["challenger"] is None
    assert ("version", 3) in asked
    assert ("alias", "champion") not in asked

    by_challenger = run(params={"model_version": None, "model_alias": "challenger", "shadow": True})
    assert by_challenger["champion"]["version"] == 8
    assert by_challenger["challenger"] is None

    scheduled = run(params={"model_version": None, "model_alias": "champion", "shadow": True})
    assert scheduled["champion"]["version"] == 7
    assert scheduled["challenger"]["version"] == 8


def test_drift_dry_run_records_the_decision_but_triggers_nothing(monkeypatch):
    from loopline import monitoring
    from loopline.orchestration import monitoring_tasks

    recorded = {}

    class _Cursor:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, sql, args=()):
            self.sql = sql
            if "INSERT INTO" in sql:
                recorded["args"] = args

        def fetchone(self):
            # No rows: a LIMIT 1 query finds none, an aggregate (max) gives one NULL.
            return None if "LIMIT 1" in self.sql or "trigger_state, reason" in self.sql else (None,)

        def fetchall(self):
            return []  # no scheduled retraining due

    class _Conn:
        def cursor(self):
            return _Cursor()

        def commit(self):
            recorded["committed"] = True

        def rollback(self):
            pass

        def close(self):
            pass

    class _TI:
        def __init__(self):
            self.pushed = {}

        def get_dr_count(self, **kwargs):
            return 0

        def xcom_push(self, key, value):
            self.pushed[key] = value

    monkeypatch.setattr(monitoring.decision, "_lock_model", lambda cur, name: None)
    monkeypatch.setattr(monitoring_tasks, "predictions_db", lambda *args: contextlib.nullcontext(_Conn()))
    dropped = {"performance_drop": True, "model_version": None}  # a realized ROC AUC drop: a real trigger
    ti = _TI()
    kwargs = {"ds": "2026-02-20", "run_id": "manual__x", "ti": ti}
    branch = monitoring_tasks.decide_retraining.function(
        None, dropped, params={"dry_run": True, "cooldown_hours": 0}, **kwargs
    )
    assert branch == monitoring_tasks.SKIP_TASK_ID
    assert ti.pushed["decision"]["trigger"] is False
    assert ti.pushed["decision"]["reason"].startswith("dry run: would trigger")
    reason, state = recorded["args"][3], recorded["args"][7]
    assert reason.startswith("dry run: would trigger")
    assert state is None

    branch = monitoring_tasks.decide_retraining.function(None, dropped, params={"dry_run": False}, **kwargs)
    assert branch == monitoring_tasks.TRIGGER_TASK_ID
    assert recorded["args"][7] == monitoring.TRIGGER_PENDING


def test_feature_pipeline_reuses_published_raw_when_not_forced(monkeypatch):
    from loopline.orchestration import feature_tasks

    monkeypatch.setattr(feature_tasks, "_published_raw", lambda day: f"raw/transactions version v-{day}")
    with pytest.raises(AirflowSkipException, match="force_reingest is off"):
        feature_tasks.ingest_drop.function(ds="2026-02-20", spark=None, params={"force_reingest": False})
    monkeypatch.setattr(feature_tasks, "_published_raw", lambda day: None)
    seen = []
    import spark_jobs.ingest as ingest

    def fake_run(spark, day):
        seen.append(day)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ingest, "run", fake_run)
    with pytest.raises(RuntimeError, match="stop here"):  # not published yet: ingested anyway
        feature_tasks.ingest_drop.function(ds="2026-02-20", spark=None, params={"force_reingest": False})
    monkeypatch.setattr(feature_tasks, "_published_raw", lambda day: "published")
    with pytest.raises(RuntimeError, match="stop here"):  # forced: ingested although published
        feature_tasks.ingest_drop.function(ds="2026-02-20", spark=None, params={"force_reingest": True})
    assert seen == [dt.date(2026, 2, 20)] * 2


def test_a_range_without_rescore_skips_saying_how_to_rescore_later(monkeypatch):
    from loopline.orchestration import backfill_tasks

    def no_database(cfg):
        raise AssertionError("rescore off must not read the stale days")

    monkeypatch.setattr(backfill_tasks, "_ledger", no_database)
    for params in ({"rescore": False}, {}, None):
        with pytest.raises(AirflowSkipException, match=r"rescore is off: nothing re-scored.*loopline rescore-stale"):
            backfill_tasks.plan_rescore.function(params=params)
