"""The pyfunc every Loopline model is logged as, as *code* (MLflow "models from code").

``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"fraud_model": <folder>})`` copies this file
into the model version instead of cloudpickling a Python object, so the version holds no pickle. The weights
travel in native formats beside it (``artifacts/fraud_model/``: ``meta.json`` + ``booster.json`` or
``mlp.pt``). Loopline itself never runs this file from the store: the gate and scoring build the model from
the native files through :mod:`loopline.artifacts`. It is here for MLflow-native consumers
(``mlflow.pyfunc.load_model``, ``mlflow models serve``), which execute it.
"""

from __future__ import annotations

import mlflow.models

from loopline.training.pyfunc import LooplineModel

mlflow.models.set_model(LooplineModel())
