"""A model by its type: :func:`train_model` fits a new one, :func:`load_model` reads a saved one."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.training import MODEL_TYPES
from loopline.training.models.base import FORMAT_VERSION, FitInfo, FraudModel, _check_recorded_columns
from loopline.training.models.devices import resolve_device
from loopline.training.models.mlp import MLPModel
from loopline.training.models.params import TrainParams
from loopline.training.models.preprocess import Preprocessor
from loopline.training.models.xgboost_model import XGBoostModel

log = logging.getLogger(__name__)


def load_model(folder: str | Path) -> FraudModel:
    """Load a model saved by :meth:`FraudModel.save` (on CPU; the saved device does not matter)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported model format {meta.get('format_version')!r} in {folder}")
    _check_recorded_columns(meta.get("input_columns"), folder)
    params = TrainParams(**{**meta["params"], "hidden": tuple(meta["params"]["hidden"])})
    pre = Preprocessor.from_dict(meta["preprocessor"])
    info = FitInfo(**meta["fit_info"])
    model: FraudModel
    if meta["model_type"] == "xgboost":
        model = XGBoostModel.load(folder, pre, meta["pos_weight"], params, info)
    elif meta["model_type"] == "mlp":
        model = MLPModel.load(folder, pre, meta["pos_weight"], params, info)
    else:
        raise ValueError(f"unknown model type {meta['model_type']!r} in {folder}")
    decision = meta.get("decision")
    model.decision = decision if isinstance(decision, dict) and "threshold" in decision else None
    return model


def train_model(
    model_type: str,
    train: pd.DataFrame,
    y_train: np.ndarray,
    validation: pd.DataFrame,
    y_validation: np.ndarray,
    params: TrainParams | None = None,
    device: str = "auto",
    on_iteration: Callable[[int, float], None] | None = None,
) -> FraudModel:
    """Fit ``model_type`` on ``train`` with early stopping on ``validation`` (PR AUC).

    ``on_iteration(step, validation_pr_auc)`` is called after every boosting round / epoch; an exception it
    raises (a pruned search trial) stops the fit and propagates.

    ``device``: ``auto`` | ``cpu`` | ``cuda`` (resolved by :func:`resolve_device`; ``cuda`` without a GPU raises
    :class:`DeviceUnavailableError`).
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    params = params or TrainParams()
    resolved = resolve_device(device, model_type)
    y_train = np.asarray(y_train).astype(np.float32)
    y_validation = np.asarray(y_validation).astype(np.float32)
    log.info("training %s on %s: %d train rows, %d validation rows", model_type, resolved, len(train), len(validation))
    cls = XGBoostModel if model_type == "xgboost" else MLPModel
    return cls.fit(train, y_train, validation, y_validation, params, resolved, on_iteration)
