"""The XGBoost model (:class:`XGBoostModel`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.training.models.base import Explanation, FitInfo, FraudModel
from loopline.training.models.params import TrainParams
from loopline.training.models.preprocess import INPUT_COLUMNS, Preprocessor, positive_weight


class XGBoostModel(FraudModel):
    model_type = "xgboost"

    def __init__(self, booster, preprocessor: Preprocessor, pos_weight: float, params: TrainParams, fit_info: FitInfo):
        super().__init__(preprocessor, pos_weight, params, fit_info)
        self.booster = booster

    def _dmatrix(self, df: pd.DataFrame):
        import xgboost as xgb

        return xgb.DMatrix(self.preprocessor.xgboost_frame(df), enable_categorical=True)

    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        best = self.fit_info.best_iteration
        # inplace_predict: no DMatrix copy, several times faster on batches (the scoring hot path)
        frame = self.preprocessor.xgboost_frame(df)
        return np.asarray(self.booster.inplace_predict(frame, iteration_range=(0, best + 1)), dtype=np.float64)

    def feature_importance(self) -> dict[str, float]:
        gain = self.booster.get_score(importance_type="gain")
        return {name: float(gain.get(name, 0.0)) for name in INPUT_COLUMNS}

    def contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        return self.explain(df).contributions

    def explain(self, df: pd.DataFrame, method: str = "exact") -> Explanation:
        """TreeSHAP (``exact``) or Saabas (``approx``, far cheaper: see the Benchmarks page); both add up with
        the bias to the margin. The prior correction shifts the base only."""
        if method not in ("exact", "approx"):
            raise ValueError(f"unknown explanation method {method!r}: exact | approx")
        best = self.fit_info.best_iteration
        values = self.booster.predict(
            self._dmatrix(df), pred_contribs=True, approx_contribs=method == "approx", iteration_range=(0, best + 1)
        )
        contributions = pd.DataFrame(values[:, :-1], columns=list(INPUT_COLUMNS), index=df.index)
        base = values[:, -1].astype(np.float64) - np.log(self.pos_weight)
        return Explanation(contributions, base, "tree_shap" if method == "exact" else "saabas")

    def _save_weights(self, folder: Path) -> None:
        self.booster.save_model(str(folder / "booster.json"))

    @classmethod
    def load(cls, folder: Path, pre: Preprocessor, pos_weight: float, params: TrainParams, info: FitInfo):
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(folder / "booster.json"))
        booster.set_param({"device": "cpu", "nthread": 0})
        return cls(booster, pre, pos_weight, params, info)

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        y_train: np.ndarray,
        val: pd.DataFrame,
        y_val: np.ndarray,
        params: TrainParams,
        device: str,
        on_iteration: Callable[[int, float], None] | None = None,
    ) -> XGBoostModel:
        import xgboost as xgb

        started = time.perf_counter()
        pre = Preprocessor.fit(train)
        weight = params.scale_pos_weight or positive_weight(y_train)
        # QuantileDMatrix: hist bins computed once (less memory, and what the GPU path wants); validation
        # is binned with the training cuts.
        dtrain = xgb.QuantileDMatrix(pre.xgboost_frame(train), label=y_train, enable_categorical=True)
        dval = xgb.QuantileDMatrix(pre.xgboost_frame(val), label=y_val, enable_categorical=True, ref=dtrain)
        booster_params = {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "aucpr"],  # the last one drives early stopping
            "tree_method": "hist",
            "device": device,
            "learning_rate": params.learning_rate_for("xgboost"),
            "max_depth": params.max_depth,
            "min_child_weight": params.min_child_weight,
            "subsample": params.subsample,
            "colsample_bytree": params.colsample_bytree,
            "lambda": params.reg_lambda,
            "max_cat_to_onehot": params.max_cat_to_onehot,
            "scale_pos_weight": weight,
            "seed": params.seed,
            "verbosity": 1,
        }
        evals_result: dict[str, dict[str, list[float]]] = {}
        callbacks = []
        if on_iteration is not None:

            class _Report(xgb.callback.TrainingCallback):
                def after_iteration(self, model, epoch, evals_log) -> bool:
                    on_iteration(epoch, float(evals_log["validation"]["aucpr"][-1]))  # may raise to stop
                    return False

            callbacks.append(_Report())
        booster = xgb.train(
            booster_params,
            dtrain,
            num_boost_round=params.max_rounds,
            evals=[(dval, "validation")],
            early_stopping_rounds=params.early_stopping_rounds,
            evals_result=evals_result,
            verbose_eval=False,
            callbacks=callbacks or None,
        )
        history = [float(v) for v in evals_result["validation"]["aucpr"]]
        best = int(getattr(booster, "best_iteration", len(history) - 1))
        booster.set_param({"device": "cpu"})  # what is saved predicts anywhere
        info = FitInfo(
            device=device,
            best_iteration=best,
            iterations=len(history),
            seconds=time.perf_counter() - started,
            best_val_pr_auc=history[best] if history else None,
            history=history,
        )
        return cls(booster, pre, weight, params, info)
