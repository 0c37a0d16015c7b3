"""Loopline's trainer: training set from the lake, XGBoost or MLP, evaluation, MLflow pyfunc.

No Airflow and no Spark in here: the same code runs as ``python -m loopline.training`` in a GPU pod and as a
local CPU process. Public API (imported lazily, so ``import loopline.training`` stays cheap)::

    build_training_set(lake_root, cutoff, window_days, validation_days, holdout_days, label_maturity_days)
        -> TrainingSet                                                   # loopline.training.dataset
    train_model(model_type, train, y_train, validation, y_validation, params=None, device="auto")
        -> FraudModel  (.predict_proba(df), .contributions(df), .save(dir)); load_model(dir)
    resolve_device("auto" | "cpu" | "cuda", model_type) -> "cpu" | "cuda"  # loopline.training.models
    loopline.training.evaluate.evaluate(y_true, proba, threshold) -> dict
    run_training(TrainingOptions) -> dict                                # loopline.training.trainer
    LooplineModel                                                        # loopline.training.pyfunc
"""

from __future__ import annotations

import importlib
from typing import Any, get_args

from loopline.config import TrainingConfig

# The model families as the configuration's ``training.model_type`` spells them: the one list every part
# (the trainer, its command line, the trigger form) takes them from.
MODEL_TYPES: tuple[str, ...] = get_args(TrainingConfig.model_fields["model_type"].annotation)

_EXPORTS = {
    "build_training_set": "dataset",
    "plan_splits": "dataset",
    "TrainingSet": "dataset",
    "TrainingDataError": "dataset",
    "LABEL": "dataset",
    "MODEL_FEATURES": "dataset",
    "train_model": "models",
    "load_model": "models",
    "resolve_device": "models",
    "FraudModel": "models",
    "TrainParams": "models",
    "DeviceUnavailableError": "models",
    "expected_calibration_error": "evaluate",
    "run_training": "trainer",
    "TrainingOptions": "trainer",
    "LooplineModel": "pyfunc",
}

__all__ = sorted([*_EXPORTS, "MODEL_TYPES"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
