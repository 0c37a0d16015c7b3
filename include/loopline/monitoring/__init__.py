"""The nightly monitor's building blocks (no Airflow): inputs, cached detectors, reports, Postgres, decisions.

``drift_monitor`` runs these for one day ``ds``:

1. :func:`day_frame` joins the day's committed features with the champion's committed scores; the scores say
   which model version scored the day, and that version's reference sample is what the day is tested against.
2. :func:`cached_detector` fits a detector once per model version (and per drift settings) from the model
   run's ``reference_sample.parquet`` and keeps it as an MLflow artifact of that run
   (``drift_detector/<settings key>/``); later nights download it instead of refitting.
3. :func:`render_report` draws the most drifted features (reference vs current) and the p-values into an
   HTML page with PNGs; :func:`log_report` keeps them in one MLflow run per day (experiment
   ``drift.experiment``), reused by reruns.
4. :func:`write_drift` replaces the day in ``drift_runs`` / ``drift_reports`` in one transaction.
5. :func:`realized_day` scores the day whose labels matured (``ds - features.label_maturity_days``) against
   the labels reported up to ``ds``; :func:`write_performance` upserts ``model_performance``.
6. :func:`decide_and_record` wraps :func:`loopline.drift.retrain_decision` with the durable history of
   ``retraining_decisions``, atomically per model (advisory lock): the cooldown counts in confirmed triggers
   of nights (logical dates), so a backfill replaying a month of nights triggers as those nights would have,
   and a rerun of a night never triggers twice. A trigger is recorded ``pending`` and becomes ``confirmed``
   (:func:`confirm_trigger`) once the ``train_model`` run exists; a failed trigger stays pending and a rerun
   of the night triggers again.

Missing inputs raise :class:`MissingInput` with what to do: the DAG ends the night with that message and
never reports drift it did not measure.

Modules
-------
:mod:`~loopline.monitoring.inputs` (the scored day, :class:`MissingInput`), :mod:`~loopline.monitoring.detectors`
(cached detectors, warming features), :mod:`~loopline.monitoring.reports` (the HTML report in MLflow, the drift
rows), :mod:`~loopline.monitoring.performance` (realized performance) and :mod:`~loopline.monitoring.decision`
(the decision, its confirmation, the notification). Their public names are importable from
``loopline.monitoring``.
"""

from loopline.monitoring.decision import (
    PENDING_LEASE,
    TRIGGER_CONFIRMED,
    TRIGGER_PENDING,
    confirm_trigger,
    decide_and_record,
    decision_dict,
    notification,
)
from loopline.monitoring.detectors import cached_detector, detector_key, reference_frame, warming
from loopline.monitoring.inputs import (
    DETECTOR_ARTIFACT,
    REFERENCE_ARTIFACT,
    SCORE_COLUMNS,
    MissingInput,
    ScoredDay,
    day_frame,
    workdir,
)
from loopline.monitoring.performance import (
    matured_labels,
    realized_day,
    realized_slices,
    write_performance,
    write_performance_slices,
)
from loopline.monitoring.reports import log_report, render_report, write_drift

__all__ = [
    "DETECTOR_ARTIFACT",
    "PENDING_LEASE",
    "REFERENCE_ARTIFACT",
    "SCORE_COLUMNS",
    "TRIGGER_CONFIRMED",
    "TRIGGER_PENDING",
    "MissingInput",
    "ScoredDay",
    "cached_detector",
    "confirm_trigger",
    "day_frame",
    "decide_and_record",
    "decision_dict",
    "detector_key",
    "log_report",
    "matured_labels",
    "notification",
    "realized_day",
    "realized_slices",
    "reference_frame",
    "render_report",
    "warming",
    "workdir",
    "write_drift",
    "write_performance",
    "write_performance_slices",
]
