"""The MLflow pyfunc every Loopline model is logged as: ``predict(df)`` -> fraud probabilities.

It is logged as code (:mod:`loopline.training.pyfunc_code`, MLflow "models from code"), never pickled. The
model folder travels as the pyfunc artifact ``fraud_model`` (``meta.json`` + ``booster.json`` or ``mlp.pt``,
see :mod:`loopline.training.models`); this class only loads it. The gate and scoring do not use this class:
they build the model from the native files through :mod:`loopline.artifacts` after verifying their digests.
It serves MLflow-native consumers (``mlflow.pyfunc.load_model``), and needs the ``loopline`` package
importable (it is in the Airflow, Spark and trainer images).

Reason codes: ``loaded.unwrap_python_model().contributions(df)`` returns per-feature log-odds
contributions (XGBoost: exact TreeSHAP from the booster; MLP: occlusion against training reference values).
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

ARTIFACT_KEY = "fraud_model"


class LooplineModel(mlflow.pyfunc.PythonModel):
    """Uniform pyfunc wrapper around a :class:`loopline.training.models.FraudModel` folder."""

    def __init__(self, model_type: str | None = None, threshold: float | None = None):
        self.model_type = model_type
        self.threshold = threshold
        self._model = None

    def load_context(self, context) -> None:
        from loopline.training.models import load_model

        self._model = load_model(context.artifacts[ARTIFACT_KEY])
        self.model_type = self._model.model_type

    @property
    def fraud_model(self):
        if self._model is None:
            raise RuntimeError("the model is not loaded: use mlflow.pyfunc.load_model(uri)")
        return self._model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.fraud_model.predict_proba(frame)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-row, per-feature contributions to the log-odds (for reason codes)."""
        return self.fraud_model.contributions(frame)
