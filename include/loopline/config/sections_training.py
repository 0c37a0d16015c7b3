"""Sections of training and promotion: the trainer pod on Kubernetes, hyper-parameter search, training,
slices, the gate, the registry and promotion.
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from loopline.config.base import _IDENTIFIER, _Section


class KubernetesConfig(_Section):
    namespace: str
    """Namespace of the trainer pod."""
    image: str
    """Trainer image (``docker/trainer.Dockerfile``)."""
    service_account: str
    """Service account of the trainer pod."""
    gpus: int = Field(ge=0)
    """``nvidia.com/gpu`` requested and limited (0: a CPU pod)."""
    cpu: str
    """CPU request and limit of the trainer pod."""
    memory: str
    """Memory request and limit of the trainer pod."""
    node_selector: dict[str, str]
    """Node selector of the trainer pod (e.g. GPU nodes)."""
    tolerations: list[dict[str, str]]
    """Tolerations of the trainer pod (e.g. the GPU nodes' taint)."""
    secret_name: str
    """Kubernetes secret whose keys become the pod's environment (MLflow and S3 credentials,
    ``LOOPLINE_SEARCH_STORAGE_URL``).
    """
    startup_timeout_seconds: int = Field(ge=1)
    """How long the pod may take to start before the task fails."""
    schedule_timeout_seconds: int = Field(ge=1)
    """How long the pod may wait to be scheduled (e.g. for a free GPU) before the task fails."""
    run_as_user: int = Field(default=1000, ge=1)
    """The pod's non-root user id: the image's ``trainer`` user unless the cluster assigns a range."""
    run_as_group: int = Field(default=1000, ge=1)
    """The pod's non-root group id."""
    scratch_size: str = "20Gi"
    """Size of the writable emptyDir at ``/tmp`` (HOME, TMPDIR, caches); the rest of the root filesystem is read-only.
    """


SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


# Hyper-parameters (loopline.training.models.TrainParams fields) a search may vary, per model type.
SEARCHABLE: dict[str, tuple[str, ...]] = {
    "xgboost": ("learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda"),
    "mlp": ("learning_rate", "dropout", "weight_decay", "batch_size"),
}
_INTEGER_PARAMS = ("max_depth", "batch_size")


class SearchRange(_Section):
    """One hyper-parameter's range: ``low <= value <= high``, sampled on a log scale when ``log``."""

    low: float
    """Lowest value sampled."""
    high: float
    """Highest value sampled (must exceed ``low``)."""
    log: bool = False
    """Sample on a log scale (needs ``low > 0``)."""

    @model_validator(mode="after")
    def _possible(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"impossible range: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0 (got {self.low})")
        return self


class SearchConfig(_Section):
    """Hyper-parameter search (Optuna) inside the trainer; ``trials: 0`` trains the configured parameters."""

    trials: int = Field(default=0, ge=0)
    """Budget in trials (completed and pruned, over every attempt); 0 trains the configured parameters without a search.
    """
    minutes: float = Field(default=30.0, gt=0)
    """Budget in wall-clock minutes per attempt; the search ends at whichever budget ends first."""
    pruning: bool = True
    """Median pruning on the validation PR AUC, round by round."""
    warmup_steps: int = Field(default=10, ge=0)
    """Rounds (epochs) a trial runs before it may be pruned."""
    storage_url: str | None = None
    """SQLAlchemy URL of the study storage, so an interrupted search resumes; ``LOOPLINE_SEARCH_STORAGE_URL`` (with
    credentials) takes precedence. None and no variable: the study lives in memory.
    """
    space: dict[str, dict[str, SearchRange]] = Field(default_factory=dict)
    """Per model type (``xgboost``, ``mlp``): hyper-parameter name to its ``{low, high, log}`` range; unknown parameters
    and impossible ranges fail at load.
    """

    @field_validator("space")
    @classmethod
    def _known(cls, value: dict[str, dict[str, SearchRange]]) -> dict[str, dict[str, SearchRange]]:
        for model_type, ranges in value.items():
            if model_type not in SEARCHABLE:
                raise ValueError(f"unknown model type {model_type!r} (one of {', '.join(SEARCHABLE)})")
            for name, bounds in ranges.items():
                if name not in SEARCHABLE[model_type]:
                    raise ValueError(
                        f"{model_type}.{name} is not searchable (one of {', '.join(SEARCHABLE[model_type])})"
                    )
                if name in _INTEGER_PARAMS and (bounds.low != int(bounds.low) or bounds.high != int(bounds.high)):
                    raise ValueError(f"{model_type}.{name} is an integer: give integer low and high")
                if name in ("subsample", "colsample_bytree", "dropout") and not (bounds.low >= 0 and bounds.high <= 1):
                    raise ValueError(f"impossible range for {model_type}.{name}: it must lie within 0..1")
        return value


class TrainingConfig(_Section):
    model_type: Literal["xgboost", "mlp"]
    """Model trained by default: ``xgboost`` or ``mlp`` (PyTorch)."""
    runner: Literal["local", "kubernetes"]
    """``local``: the trainer runs as a child process of the task; ``kubernetes``: in a pod (KubernetesPodOperator)."""
    schedule: str | None
    """``train_model``'s routine retraining (a 5-field cron or a preset such as ``@weekly``); None: only triggered runs.
    """
    window_days: int = Field(ge=2)
    """Days of features in a training window (training, validation and holdout together)."""
    validation_days: int = Field(ge=1)
    """Most recent days before the holdout used for early stopping and the threshold."""
    holdout_days: int = Field(ge=1)
    """Most recent days of the window kept for the gate's comparison."""
    seed: int
    """Seed of the trainer and of the search's sampler."""
    max_rounds: int = Field(ge=1)
    """Most boosting rounds (XGBoost) or epochs (MLP)."""
    early_stopping_rounds: int = Field(ge=1)
    """Rounds without validation improvement before training stops."""
    max_fraud_rate: float = Field(gt=0, le=1)
    """A larger labelled fraud share is a broken or poisoned label feed: the trainer refuses to train."""
    pool: str
    """Airflow pool of ``train_candidate``: trainings that may run at once."""
    pool_slots: int = Field(ge=1)
    """Slots of the training pool (GPUs for the kubernetes runner, or local trainers the machine can take)."""
    kubernetes: KubernetesConfig
    """The trainer pod of the ``kubernetes`` runner."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    """Hyper-parameter search (Optuna) inside the trainer."""

    @field_validator("schedule")
    @classmethod
    def _cron_or_preset(cls, value: str | None) -> str | None:
        if value is None or value in SCHEDULE_PRESETS or len(value.split()) == 5:
            return value
        raise ValueError(f"a cron expression of 5 fields, one of {', '.join(SCHEDULE_PRESETS)}, or null")


class SliceConfig(_Section):
    """A slicing of the holdout by one feature column: its values, or bands of a numeric column."""

    name: str
    """Name of the slicing (a lower-case identifier), used in decisions and reports."""
    column: str
    """Feature column whose values (or bands) make the groups."""
    bands: list[float] | None = None
    """Numeric columns: ascending band edges; rows fall in ``[edge_i, edge_i+1)``, the last band is open-ended."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"slice name {value!r} must be a lower-case identifier")
        return value

    @field_validator("column")
    @classmethod
    def _feature_like(cls, value: str) -> str:
        # a first check that needs no config (the exact window columns are checked by LooplineConfig)
        from loopline.schemas import CATEGORICAL_FEATURES, feature_schema

        fixed = (*CATEGORICAL_FEATURES, *feature_schema(("1h", "1d")).numeric)
        windowed = re.fullmatch(r"(cnt|sum|avg_amount|amount_to_avg|amount_zscore)_\d+[hd]", value)
        if value not in fixed and not windowed:
            raise ValueError(f"column {value!r} is not a feature column (one of {', '.join(fixed)})")
        return value

    @field_validator("bands")
    @classmethod
    def _ascending(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) < 1 or any(b <= a for a, b in itertools.pairwise(value))):
            raise ValueError(f"bands must be a non-empty, strictly ascending list of edges (got {value})")
        return value


class GateSlicesConfig(_Section):
    """Per-slice comparison of candidate and champion on the same holdout (see :mod:`loopline.slices`)."""

    by: list[SliceConfig] = Field(default_factory=list)
    """The slicings compared (a feature column, with ``bands`` for a numeric one)."""
    min_rows: int = Field(default=200, ge=1)
    """A group with fewer holdout rows is reported but never decides."""
    min_positives: int = Field(default=30, ge=1)
    """A group with fewer frauds is reported but never decides."""
    metric: Literal["roc_auc", "pr_auc", "recall_at_threshold"] = "roc_auc"
    """Metric compared per supported group: ``roc_auc``, ``pr_auc`` or ``recall_at_threshold``."""
    tolerance: float = Field(default=0.02, ge=0)
    """Largest allowed drop of ``metric`` in a supported group."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """A drop beyond the tolerance rejects only when the paired bootstrap interval of candidate minus champion on the
    group's rows lies below zero at this confidence.
    """
    bootstrap_samples: int = Field(default=500, ge=0)
    """Resamples of that interval; 0: the tolerance alone decides."""
    fairness_attribute: str | None = None
    """Slice name whose groups get fairlearn's demographic-parity and equalized-odds differences."""

    @model_validator(mode="after")
    def _consistent(self) -> GateSlicesConfig:
        names = [s.name for s in self.by]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"slice name(s) used twice: {', '.join(twice)}")
        if self.fairness_attribute is not None and self.fairness_attribute not in names:
            raise ValueError(f"fairness_attribute {self.fairness_attribute!r} is not a configured slice name")
        return self


class GateConfig(_Section):
    primary_metric: Literal["roc_auc", "pr_auc"]
    """Metric the candidate must improve: ``roc_auc`` or ``pr_auc``."""
    min_improvement: float = Field(ge=0)
    """The candidate must beat the champion by at least this on the primary metric."""
    absolute_floor: float = Field(ge=0, le=1)
    """Every candidate, the first one too, needs at least this primary metric to become champion."""
    guardrails: dict[str, float]
    """Metric name to the largest allowed drop against the champion."""
    slices: GateSlicesConfig = Field(default_factory=GateSlicesConfig)
    """Per-slice comparison of candidate and champion on the same holdout."""


class RegistryConfig(_Section):
    """How model versions are loaded from the registry (gate, scoring, shadow scoring)."""

    allow_pickled_models: bool = False
    """Unsafe: load old cloudpickled pyfunc versions (unpickling runs arbitrary code from the model store). Off, such a
    version is refused.
    """


class PromotionConfig(_Section):
    """How a challenger that passed the gate reaches traffic, and the evidence a shadow needs (docs/promotion.md)."""

    policy: Literal["promote", "shadow_first"] = "promote"
    """``promote``: the gate moves ``champion`` itself; ``shadow_first``: the winner gets alias ``shadow``, is judged on
    matured labels and promoted once a person approves.
    """
    min_days: int = Field(default=5, ge=1)
    """Matured days scored by both models before the shadow is judged."""
    min_positives: int = Field(default=200, ge=1)
    """Labelled frauds among those paired rows before the shadow is judged."""
    min_improvement: float = Field(default=0.0, ge=0)
    """The lower bound of the ROC AUC difference's interval must clear this for the shadow to win."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the paired bootstrap interval of the ROC AUC difference."""
    bootstrap_samples: int = Field(default=1000, ge=100)
    """Resamples of that interval."""
    approval_timeout_hours: float = Field(default=72, gt=0)
    """An approval request nobody answers is retired after this."""
    approvers: list[str] = Field(default_factory=list)
    """Airflow user ids who may approve; empty: anyone allowed to answer the DAG."""
    retrain_at_label_maturity: bool = True
    """A pattern drift schedules its retraining for when the drifted night's labels matured, not at once."""
    max_shadow_days: int | None = Field(default=None, ge=1)
    """A shadow still without a verdict after this many compared days is retired as inconclusive; empty: never."""

    @model_validator(mode="after")
    def _max_after_min(self) -> PromotionConfig:
        if self.max_shadow_days is not None and self.max_shadow_days < self.min_days:
            raise ValueError(
                f"promotion.max_shadow_days ({self.max_shadow_days}) must be at least promotion.min_days "
                f"({self.min_days}): a shadow would be retired before it could be judged"
            )
        return self
