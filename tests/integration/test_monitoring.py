"""loopline.monitoring against real services: an MLflow store for the detector cache, Postgres for reports."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from loopline import monitoring
from loopline.config import load_config
from loopline.drift import DriftResult, DriftTest
from loopline.training.synthetic import synthetic_day

SCHEMA = "monitoring_it"
DAY = dt.date(2026, 2, 20)


@pytest.fixture
def client(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("it", artifact_location=str(tmp_path / "artifacts"))
    return client, experiment


def test_the_detector_is_fitted_once_per_model_run_and_a_missing_reference_is_explained(client, tmp_path):
    client, experiment = client
    cfg = load_config().drift.model_copy(update={"backend": "scipy"})  # alibi's own tests are in unit/
    bare = client.create_run(experiment).info.run_id
    with pytest.raises(monitoring.MissingInput, match=r"has no reference_sample\.parquet"):
        monitoring.cached_detector(client, bare, cfg, tmp_path / "a")

    run_id = client.create_run(experiment).info.run_id
    frame, probability = synthetic_day(DAY, 2000, 3)
    (tmp_path / "ref").mkdir()
    frame.assign(score=probability).to_parquet(tmp_path / "ref" / monitoring.REFERENCE_ARTIFACT)
    client.log_artifact(run_id, str(tmp_path / "ref" / monitoring.REFERENCE_ARTIFACT))

    first, built = monitoring.cached_detector(client, run_id, cfg, tmp_path / "b")
    assert built is True
    second, built_again = monitoring.cached_detector(client, run_id, cfg, tmp_path / "c")
    assert built_again is False
    current, p = synthetic_day(DAY + dt.timedelta(days=1), 2000, 4)
    current["score"] = p
    assert first.test(current).to_dict()["tests"] == second.test(current).to_dict()["tests"]
    # Other settings, another key: fitted once more, next to the first.
    other = cfg.model_copy(update={"p_value": 0.01})
    _, built_other = monitoring.cached_detector(client, run_id, other, tmp_path / "d")
    assert built_other is True
    assert len(client.list_artifacts(run_id, monitoring.DETECTOR_ARTIFACT)) == 2


def _result(drift: bool, n: int) -> DriftResult:
    tests = tuple(DriftTest(f"f{i}", "ks", 0.1 * i, 0.5 / (i + 1), 0.01, False) for i in range(n))
    return DriftResult("scipy", tests, (), None, None, 0, 2, drift, 100, 200, 0.05, "bonferroni")


def _day() -> monitoring.ScoredDay:
    return monitoring.ScoredDay(DAY, pd.DataFrame(), "m", 3, "run", 0.2, "features-uri", "scores-uri")


def test_a_day_is_replaced_whole_and_a_failed_write_keeps_the_previous_one(postgres):
    postgres.migrate(SCHEMA)
    conn = postgres.connect_loader()
    try:
        monitoring.write_drift(
            conn, SCHEMA, _day(), _result(False, 5), report_uri=None, mlflow_run_id=None, airflow_run_id="a"
        )
        monitoring.write_drift(
            conn, SCHEMA, _day(), _result(True, 7), report_uri=None, mlflow_run_id=None, airflow_run_id="b"
        )
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.drift_reports WHERE ds = %s", (DAY,))
            assert cur.fetchone()[0] == 7
        conn.commit()

        broken = _result(False, 3)
        broken = DriftResult(
            **{**broken.__dict__, "tests": (*broken.tests, DriftTest("bad", "nonsense", 1, 1, 1, False))}  # type: ignore[arg-type]
        )
        with pytest.raises(Exception, match="drift_reports_test_check"):
            monitoring.write_drift(
                conn, SCHEMA, _day(), broken, report_uri=None, mlflow_run_id=None, airflow_run_id="c"
            )
        with conn.cursor() as cur:
            cur.execute(f"SELECT drift, airflow_run_id FROM {SCHEMA}.drift_runs WHERE ds = %s", (DAY,))
            assert cur.fetchall() == [(True, "b")]
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.drift_reports WHERE ds = %s", (DAY,))
            assert cur.fetchone()[0] == 7
        conn.commit()
    finally:
        conn.close()


def test_a_test_that_could_not_be_computed_is_stored_as_null(postgres):
    postgres.migrate(SCHEMA)
    conn = postgres.connect_loader()
    try:
        odd = DriftResult(
            "scipy",
            (
                DriftTest("flat", "ks", float("nan"), float("nan"), 0.01, False),
                DriftTest("big", "chi2", float("inf"), 0.0, 0.01, True),
            ),
            ("big",), None, None, 1, 2, False, 100, 200, 0.05, "bonferroni",
        )  # fmt: skip
        monitoring.write_drift(conn, SCHEMA, _day(), odd, report_uri=None, mlflow_run_id=None, airflow_run_id="d")
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT feature, statistic, p_value FROM {SCHEMA}.drift_reports WHERE ds = %s ORDER BY 1", (DAY,)
            )
            assert cur.fetchall() == [("big", float("inf"), 0.0), ("flat", None, None)]
        conn.commit()
    finally:
        conn.close()
    assert monitoring.reports._finite(np.float32(0.25)) == 0.25


def test_a_grown_segment_is_stored_with_its_excess_share(postgres):
    postgres.migrate(SCHEMA)
    conn = postgres.connect_loader()
    try:
        result = DriftResult(
            "scipy",
            (
                DriftTest("amount_eur", "ks", 0.02, 0.2, 0.002, False, effect=0.02),
                DriftTest("card_testing", "segment", 48.5, 3e-12, 0.0167, True, effect=0.0104),
                DriftTest("high_scores", "segment", 9.1, 0.003, 0.0167, True, counted=False, effect=0.006),
            ),
            (), None, None, 1, 2, False, 5000, 5000, 0.05, "bonferroni", drifted_segments=("card_testing",),
        )  # fmt: skip
        monitoring.write_drift(conn, SCHEMA, _day(), result, report_uri=None, mlflow_run_id=None, airflow_run_id="e")
        with conn.cursor() as cur:
            cur.execute(f"SELECT drifted_segments, summary FROM {SCHEMA}.drift_runs WHERE ds = %s", (DAY,))
            segments, summary = cur.fetchone()
            assert segments == ["card_testing"]
            assert "segment(s) grown: card_testing" in summary
            cur.execute(
                f"SELECT feature, effect, drifted, counted FROM {SCHEMA}.drift_reports "
                "WHERE ds = %s AND test = 'segment' ORDER BY 1",
                (DAY,),
            )
            assert cur.fetchall() == [("card_testing", 0.0104, True, True), ("high_scores", 0.006, True, False)]
        conn.commit()
    finally:
        conn.close()


def _commit_day(lake_root: str, day: dt.date) -> None:
    from pathlib import Path

    from loopline.lake import RAW_TRANSACTIONS, Lake

    lake = Lake(lake_root)
    folder = Path(lake.version_uri(RAW_TRANSACTIONS, day, "v1"))
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").write_bytes(b"")
    lake.commit(RAW_TRANSACTIONS, day, "v1")


def test_warming_features_are_measured_from_the_lake_and_stored_as_not_counted(postgres, tmp_path):
    cfg = load_config()
    lake_root = str(tmp_path / "lake")
    reference = pd.DataFrame({"event_time": pd.to_datetime(["2026-02-10T10:00Z", "2026-02-14T23:00Z"])})
    assert monitoring.warming(cfg, lake_root, reference) == ()  # an empty lake: nothing to say
    _commit_day(lake_root, dt.date(2026, 1, 1))  # the reference starts 40 days into the lake
    assert monitoring.warming(cfg, lake_root, reference) == ("merchant_risk", "category_risk", "merchant_label_count")
    _commit_day(lake_root, dt.date(2026, 1, 25))  # later days do not move the lake's start
    assert len(monitoring.warming(cfg, lake_root, reference)) == 3
    counting = cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"count_warming_features": True})})
    assert monitoring.warming(counting, lake_root, reference) == ()

    tests = (
        DriftTest("amount_eur", "ks", 0.3, 0.0, 0.01, True),
        DriftTest("merchant_risk", "ks", 0.2, 0.0, 0.01, True, counted=False),
    )
    result = DriftResult(
        "scipy", tests, ("amount_eur",), None, None, 1, 2, False, 100, 200, 0.05, "bonferroni", ("merchant_risk",)
    )
    postgres.migrate(SCHEMA)
    conn = postgres.connect_loader()
    try:
        monitoring.write_drift(conn, SCHEMA, _day(), result, report_uri=None, mlflow_run_id=None, airflow_run_id="w")
        with conn.cursor() as cur:
            cur.execute(f"SELECT feature, drifted, counted FROM {SCHEMA}.drift_reports WHERE ds = %s ORDER BY 1", [DAY])
            assert cur.fetchall() == [("amount_eur", True, True), ("merchant_risk", True, False)]
            cur.execute(f"SELECT warming_features, drifted_features FROM {SCHEMA}.drift_runs WHERE ds = %s", (DAY,))
            assert cur.fetchone() == (["merchant_risk"], ["amount_eur"])
        conn.commit()
    finally:
        conn.close()
