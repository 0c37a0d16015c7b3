"""One training run end to end: training set -> fit -> evaluate -> MLflow. No Airflow, no Spark.

:func:`run_training` is what ``python -m loopline.training`` calls, in a Kubernetes pod (GPU) or as a local
process (CPU); the Airflow task only chooses where it runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.config import LooplineConfig, resolve_uri
from loopline.thresholds import ThresholdDecision, choose_threshold
from loopline.training import MODEL_TYPES
from loopline.training.dataset import LABEL, TrainingSet, build_training_set, reference_sample
from loopline.training.models import INPUT_COLUMNS, TrainParams, resolve_device

log = logging.getLogger("loopline.training")


@dataclass(frozen=True)
class TrainingOptions:
    """Everything one training needs; :meth:`from_config` fills the defaults from ``loopline.yaml``."""

    cutoff: dt.date
    model_type: str
    window_days: int
    validation_days: int
    holdout_days: int
    label_maturity_days: int
    lake: str
    tracking_uri: str
    experiment: str
    artifact_root: str | None
    threshold: float
    reference_sample_size: int
    max_fraud_rate: float = 1.0
    params: TrainParams = field(default_factory=TrainParams)
    device: str = "auto"
    reason: str | None = None
    triggered_by: str | None = None
    run_name: str | None = None
    pin_id: str | None = None  # pin the lake versions read under this id (released by the caller)
    # scoring.threshold_policy (loopline.config.ThresholdPolicyConfig); None: the fixed ``threshold``
    threshold_policy: Any = None
    # training.search (loopline.config.SearchConfig); None or trials 0: fit ``params`` as given
    search: Any = None

    @classmethod
    def from_config(cls, cfg: LooplineConfig, cutoff: dt.date, **overrides: Any) -> TrainingOptions:
        from loopline.training.tracking import tracking_uri

        t = cfg.training
        params = TrainParams(seed=t.seed, max_rounds=t.max_rounds, early_stopping_rounds=t.early_stopping_rounds)
        options = cls(
            cutoff=cutoff,
            model_type=t.model_type,
            window_days=t.window_days,
            validation_days=t.validation_days,
            holdout_days=t.holdout_days,
            label_maturity_days=cfg.features.label_maturity_days,
            lake=resolve_uri(cfg.storage.lake_uri),
            tracking_uri=tracking_uri(cfg.mlflow.tracking_uri),
            experiment=cfg.mlflow.experiment,
            artifact_root=resolve_uri(cfg.mlflow.artifact_uri),
            threshold=cfg.scoring.threshold,
            reference_sample_size=cfg.drift.reference_sample_size,
            max_fraud_rate=t.max_fraud_rate,
            params=params,
            threshold_policy=cfg.scoring.threshold_policy,
            search=t.search,
        )
        search_update = {
            key: value for key in ("trials", "minutes") if (value := overrides.pop(f"search_{key}", None)) is not None
        }
        if search_update:
            overrides["search"] = t.search.model_copy(update=search_update)
        param_overrides = {k: overrides.pop(k) for k in list(overrides) if k in TrainParams.__dataclass_fields__}
        options = replace(options, **{k: v for k, v in overrides.items() if v is not None})
        if param_overrides:
            options = replace(
                options, params=replace(options.params, **{k: v for k, v in param_overrides.items() if v is not None})
            )
        return options

    def logged_params(self, device: str) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "device": device,
            "device_requested": self.device,
            "cutoff": self.cutoff.isoformat(),
            "window_days": self.window_days,
            "validation_days": self.validation_days,
            "holdout_days": self.holdout_days,
            "label_maturity_days": self.label_maturity_days,
            "threshold": self.threshold,
            "lake": self.lake,
            **self.params.for_model(self.model_type),
        }


def _metrics(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{key}": value for key, value in values.items()}


def load_training_set(options: TrainingOptions) -> TrainingSet:
    return build_training_set(
        options.lake,
        options.cutoff,
        options.window_days,
        options.validation_days,
        options.holdout_days,
        options.label_maturity_days,
        max_fraud_rate=options.max_fraud_rate,
        pin_id=options.pin_id,
    )


def decide_threshold(y_val: Any, val_proba: Any, options: TrainingOptions) -> ThresholdDecision:
    """The version's threshold from ``options.threshold_policy`` on the validation split (fixed when None).

    Raises :class:`~loopline.thresholds.ThresholdPolicyError` (bad input) when the policy cannot be met.
    """
    from loopline.config import ThresholdPolicyConfig

    policy = options.threshold_policy or ThresholdPolicyConfig(kind="fixed")
    return choose_threshold(y_val, val_proba, policy, fixed_threshold=options.threshold)


def run_training(options: TrainingOptions) -> dict[str, Any]:
    """Train, evaluate and log one model; returns the CLI's result document.

    Raises ``ValueError`` subclasses for bad input (unknown model type, ``cuda`` without a GPU, no data):
    :class:`~loopline.training.models.DeviceUnavailableError`, :class:`~loopline.training.dataset.TrainingDataError`.
    Nothing is logged to MLflow when the input is bad.
    """
    if options.model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {options.model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    started = time.perf_counter()
    # Data first: it is cheap and the common bad input; probing the GPU imports torch and xgboost.
    data = load_training_set(options)
    fp = data.fingerprint
    log.info(
        "training set for cutoff %s: %s (data sha256 %s)",
        options.cutoff,
        ", ".join(
            f"{k} {s['start']}..{s['end']} {s['rows']} rows/{s['positives']} pos" for k, s in fp["splits"].items()
        ),
        fp["data_sha256"][:12],
    )

    device = resolve_device(options.device, options.model_type)
    log.info("device: %s (requested %s)", device, options.device)

    import mlflow

    from loopline.training import evaluate as ev
    from loopline.training import tracking
    from loopline.training.models import train_model

    mlflow.set_tracking_uri(options.tracking_uri)
    experiment_id = tracking.ensure_experiment(options.experiment, options.tracking_uri, options.artifact_root)
    run_name = options.run_name or f"{options.model_type}-{options.cutoff.isoformat()}"
    tracking.end_abandoned_runs(experiment_id, run_name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(
            {
                "loopline.trigger": options.triggered_by or "manual",
                "loopline.reason": options.reason or "",
                "loopline.model_type": options.model_type,
                "loopline.cutoff": options.cutoff.isoformat(),
                "loopline.device": device,
                "loopline.data_sha256": fp["data_sha256"],
            }
        )
        y_train = data.train[LABEL].to_numpy()
        searched = None
        if options.search is not None and options.search.trials > 0:
            from loopline.training.search import run_search, study_name, winner_params

            searched = run_search(
                model_type=options.model_type,
                train=data.train,
                y_train=y_train,
                validation=data.validation,
                y_validation=data.validation[LABEL].to_numpy(),
                base=options.params,
                device=device,
                search=options.search,
                name=study_name(options.model_type, options.cutoff.isoformat(), fp["data_sha256"], options.params.seed),
                run_name=run_name,
            )
            options = replace(options, params=winner_params(options.params, searched))
            mlflow.log_params(
                {
                    "search.study": searched.study_name,
                    "search.storage": searched.storage,
                    "search.trials_budget": options.search.trials,
                    "search.minutes_budget": options.search.minutes,
                    "search.best_trial": searched.best_trial,
                    **{f"search.best.{k}": v for k, v in searched.params.items()},
                }
            )
            mlflow.log_metrics(
                {
                    "search_best_val_pr_auc": searched.best_value,
                    "search_seconds": searched.seconds,
                    "search_completed": float(searched.completed),
                    "search_pruned": float(searched.pruned),
                    "search_resumed": float(searched.resumed),
                }
            )
            mlflow.set_tag("loopline.search", "on")
        model = train_model(
            options.model_type,
            data.train,
            y_train,
            data.validation,
            data.validation[LABEL].to_numpy(),
            options.params,
            device,
        )
        train_seconds = model.fit_info.seconds
        rows_per_second = len(data.train) / train_seconds if train_seconds > 0 else float("nan")
        log.info(
            "fit: %.1f s, %d rows (%.0f rows/s), best iteration %d of %d",
            train_seconds,
            len(data.train),
            rows_per_second,
            model.fit_info.best_iteration,
            model.fit_info.iterations,
        )

        y_val = data.validation[LABEL].to_numpy()
        y_hold = data.holdout[LABEL].to_numpy()
        val_proba = model.predict_proba(data.validation)
        hold_proba = model.predict_proba(data.holdout)
        decision = decide_threshold(y_val, val_proba, options)
        threshold = decision.threshold
        model.decision = decision.as_dict()  # saved in meta.json: scoring and the gate decide with it
        log.info(
            "threshold %.6g from policy %s (target %s): validation flag rate %.4f, precision %.4f, recall %.4f",
            threshold,
            decision.policy,
            decision.target,
            decision.expected_alert_rate,
            decision.validation_precision,
            decision.validation_recall,
        )
        mlflow.set_tags({"loopline.threshold": f"{threshold:.8g}", "loopline.threshold_policy": decision.policy})
        metrics = {
            **_metrics("val", ev.evaluate(y_val, val_proba, threshold)),
            **_metrics("holdout", ev.evaluate(y_hold, hold_proba, threshold)),
        }
        importance = model.feature_importance()
        importance_kind = "XGBoost gain"
        if importance is None:
            importance = ev.permutation_importance(
                model.predict_proba, data.holdout, y_hold, INPUT_COLUMNS, seed=options.params.seed
            )
            importance_kind = "permutation (ROC AUC drop)"
        # The drift reference comes from the newest mature days (validation + holdout), not the oldest: they
        # sit closest to the days that will be scored and have the most history behind their window features
        # (the first weeks of a lake, with 7d/30d windows still filling, drift from everything after them).
        recent = pd.concat([data.validation, data.holdout], ignore_index=True)
        reference = reference_sample(recent, options.reference_sample_size, options.params.seed)
        reference["score"] = model.predict_proba(reference)
        extra = {
            "train_seconds": train_seconds,
            "train_rows": float(len(data.train)),
            "train_rows_per_second": rows_per_second,
            "best_iteration": float(model.fit_info.best_iteration),
            "iterations": float(model.fit_info.iterations),
        }
        with tempfile.TemporaryDirectory(prefix="loopline-plots-") as tmp:
            plots = ev.write_plots(Path(tmp), y_hold, hold_proba, importance, importance_kind)
            logged_model_uri = tracking.log_training_run(
                run,
                model=model,
                params={
                    **options.logged_params(device),
                    "threshold": threshold,
                    "threshold_policy": decision.policy,
                    "threshold_policy_target": decision.target,
                },
                fingerprint=fp,
                metrics={**metrics, **extra},
                plots=plots,
                holdout=data.holdout,
                reference=reference,
                threshold=threshold,
                decision=decision.as_dict(),
            )
        run_id = run.info.run_id

    result = {
        "status": "ok",
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_uri": f"runs:/{run_id}/{tracking.MODEL_NAME}",
        "logged_model_uri": logged_model_uri,
        "model_type": options.model_type,
        "metrics": metrics,
        "threshold": decision.as_dict(),
        "search": searched.as_dict() if searched is not None else None,
        "fingerprint": fp,
        "device": device,
        "train_rows": len(data.train),
        "rows_per_second": rows_per_second,
        "seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "best_iteration": model.fit_info.best_iteration,
        "feature_importance_top": dict(sorted(importance.items(), key=lambda kv: -kv[1])[:5]),
    }
    log.info(
        "run %s: holdout roc_auc %.4f pr_auc %.4f (%s)",
        run_id,
        metrics["holdout_roc_auc"],
        metrics["holdout_pr_auc"],
        result["model_uri"],
    )
    return result
