"""Typed trigger forms (Params) of the daily DAGs: what an operator may change on a manual run.

Airflow validates a run's conf against these JSON schemas before the run is created (UI form, REST API,
``airflow dags trigger``), so a wrong type or an out-of-range value never reaches a task. Every Param has a
default that reproduces the scheduled behaviour, so scheduled runs and backfills are unaffected.
``train_model``'s form lives with its tasks (:func:`loopline.orchestration.training_tasks.params`).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from loopline.config import LooplineConfig

MODEL_ALIASES = ("champion", "challenger", "shadow")


def feature_params() -> dict[str, Param]:
    """``feature_pipeline``: re-ingest the drop, or reuse the day's published raw partition."""
    return {
        "force_reingest": Param(
            True,
            type="boolean",
            description=(
                "Ingest the landing drop again even when the day's raw partition is already published (a new "
                "version, committed only if its gate passes). Off: reuse the published raw partition and rebuild "
                "only the features (e.g. after a feature-code fix); a day without published raw is ingested anyway."
            ),
        ),
    }


def backfill_params() -> dict[str, Param]:
    """``backfill_range``: the days to backfill, whether later published days that read them follow, and whether
    the stale scores a correction leaves are re-scored at the end."""
    return {
        "start": Param(
            None,
            type=["null", "string"],
            format="date",
            title="First day",
            description="First day of the range (YYYY-MM-DD), inclusive; required.",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Last day",
            description=(
                "Last day of the range (YYYY-MM-DD), inclusive; required; every day needs a complete landing drop."
            ),
        ),
        "cascade": Param(
            True,
            type="boolean",
            description=(
                "Also recompute, after the range, the already-published later days whose features read it (a "
                "corrected drop changes their windows); their scores and drift reports are flagged stale."
            ),
        ),
        "rescore": Param(
            False,
            type="boolean",
            title="Re-score stale days",
            description=(
                "Once the range succeeded, re-run batch_score for every day whose scores are stale (the days a "
                "correction recomputed): each day's own batch_score run is cleared and scores the day again. Off: "
                "re-score later with `loopline rescore-stale`."
            ),
        ),
    }


def score_params(cfg: LooplineConfig) -> dict[str, Param]:
    """``batch_score``: which registry version scores the day, and whether a challenger shadows it."""
    return {
        "model_alias": Param(
            "champion",
            type="string",
            enum=list(MODEL_ALIASES),
            description=(
                f"Registry alias of {cfg.mlflow.registered_model} that scores the day (ignored when model_version "
                "is set). Scheduled runs use champion."
            ),
        ),
        "model_version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description=(
                "A concrete registered version to score with (e.g. to re-score a day with a rolled-back version); "
                "empty: the alias decides. The version must have passed the gate (digests recorded)."
            ),
        ),
        "shadow": Param(
            cfg.scoring.shadow,
            type="boolean",
            description="Also shadow-score the day with the challenger (if one exists) into transaction_scores_shadow.",
        ),
    }


def drift_params(cfg: LooplineConfig) -> dict[str, Param]:
    """``drift_monitor``: measure and record the night, optionally without triggering retraining."""
    return {
        "dry_run": Param(
            False,
            type="boolean",
            description=(
                "Measure drift and performance and record the decision (retraining_decisions, reason prefixed "
                "'dry run:'), but never trigger train_model."
            ),
        ),
        "cooldown_hours": Param(
            cfg.drift.cooldown_hours,
            type="integer",
            minimum=0,
            maximum=24 * 60,
            description="Hours after a confirmed retraining trigger during which drift does not trigger again.",
        ),
    }


def param(context_params: Any, name: str, default: Any) -> Any:
    """``params[name]`` of a running task, or ``default`` when the run has no such Param (tests, old runs)."""
    if not context_params:
        return default
    try:
        value = context_params[name]
    except KeyError:
        return default
    return default if value is None and default is not None else value


def promotion_params(cfg: LooplineConfig) -> dict[str, Param]:
    """``promote_model``: the request to decide (raised by drift_monitor when a shadow won on matured labels)."""
    return {
        "request_id": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="The promotion request (loopline.promotion_requests.id) this run asks a person to decide.",
        ),
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description=(
                f"The {cfg.mlflow.registered_model} version the request promotes: it must still be the shadow "
                "(checked before asking and again before promoting)."
            ),
        ),
        "reason": Param(
            "shadow won on matured labels",
            type="string",
            maxLength=500,
            description="Why the promotion was requested (shown in the approval task and the alias history).",
        ),
    }
