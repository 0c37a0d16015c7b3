"""The two model types behind one interface: XGBoost and a PyTorch tabular MLP.

Both are trained with a weight on the positive class (``scale_pos_weight`` / ``pos_weight`` = negatives /
positives by default) so the rare fraud class is not ignored, and early-stop on validation PR AUC. A
weight ``w`` multiplies the odds the model learns by ``w``; :meth:`FraudModel.predict_proba` undoes that
(``p = q / (q + w (1 - q))``), so the score is a calibrated fraud probability that the configured decision
threshold, the Brier score and the calibration plot mean something for. Ranking metrics are unchanged.

``predict_proba(df)`` takes any DataFrame holding the model's input columns (``CATEGORICAL_FEATURES`` +
``NUMERIC_FEATURES``; extra columns such as ids are ignored). Categories not seen in training become
"missing" (XGBoost) or the reserved unknown embedding (MLP); ``inf`` becomes missing.

A trained model saves to a folder (``meta.json`` plus ``booster.json`` or ``mlp.pt``) that
:func:`load_model` reads on any machine: a model trained on a GPU predicts on a CPU.

Modules
-------
:mod:`~loopline.training.models.devices` (``auto``/``cpu``/``cuda``), :mod:`~loopline.training.models.params`
(:class:`TrainParams`), :mod:`~loopline.training.models.preprocess` (input columns, categories, class weight),
:mod:`~loopline.training.models.base` (the :class:`FraudModel` interface),
:mod:`~loopline.training.models.xgboost_model`, :mod:`~loopline.training.models.mlp` and
:mod:`~loopline.training.models.factory` (:func:`train_model`, :func:`load_model`). Their public names are
importable from ``loopline.training.models``.
"""

from loopline.training.models.base import FORMAT_VERSION, Explanation, FitInfo, FraudModel
from loopline.training.models.devices import (
    DEVICES,
    DeviceUnavailableError,
    resolve_device,
    torch_cuda_available,
    xgboost_cuda_available,
)
from loopline.training.models.factory import load_model, train_model
from loopline.training.models.mlp import MLPModel
from loopline.training.models.params import TrainParams
from loopline.training.models.preprocess import INPUT_COLUMNS, Preprocessor, positive_weight
from loopline.training.models.xgboost_model import XGBoostModel

__all__ = [
    "DEVICES",
    "FORMAT_VERSION",
    "INPUT_COLUMNS",
    "DeviceUnavailableError",
    "Explanation",
    "FitInfo",
    "FraudModel",
    "MLPModel",
    "Preprocessor",
    "TrainParams",
    "XGBoostModel",
    "load_model",
    "positive_weight",
    "resolve_device",
    "torch_cuda_available",
    "train_model",
    "xgboost_cuda_available",
]
