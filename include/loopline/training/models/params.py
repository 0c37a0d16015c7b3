"""The hyper-parameters of both model types (:class:`TrainParams`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of both model types (each uses its own subset; ``None`` means the type's default)."""

    seed: int = 42
    # XGBoost
    max_rounds: int = 400
    early_stopping_rounds: int = 30
    learning_rate: float | None = None  # xgboost 0.1, mlp 2e-3
    max_depth: int = 5
    min_child_weight: float = 5.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    max_cat_to_onehot: int = 4
    scale_pos_weight: float | None = None  # None: negatives / positives of the training split
    # MLP (``max_rounds`` also caps its epochs, so one "rounds / epochs upper bound" knob serves both)
    max_epochs: int = 30
    patience: int = 4
    batch_size: int = 1024
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    weight_decay: float = 1e-4

    def learning_rate_for(self, model_type: str) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 0.1 if model_type == "xgboost" else 2e-3

    def for_model(self, model_type: str) -> dict[str, Any]:
        """The parameters that matter for ``model_type`` (what gets logged)."""
        common = {"seed": self.seed, "learning_rate": self.learning_rate_for(model_type)}
        if model_type == "xgboost":
            keys = ("max_rounds", "early_stopping_rounds", "max_depth", "min_child_weight", "subsample")
            keys += ("colsample_bytree", "reg_lambda", "max_cat_to_onehot", "scale_pos_weight")
        else:
            keys = ("max_epochs", "patience", "batch_size", "hidden", "dropout", "weight_decay", "scale_pos_weight")
        out = {**common, **{key: getattr(self, key) for key in keys}}
        if model_type == "mlp":
            out["max_epochs"] = min(self.max_epochs, self.max_rounds)
        return out
