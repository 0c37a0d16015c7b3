"""The interface both model types implement (:class:`FraudModel`), what a fit records (:class:`FitInfo`) and
what a model explains (:class:`Explanation`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.training.models.params import TrainParams
from loopline.training.models.preprocess import INPUT_COLUMNS, Preprocessor, _correct_prior

FORMAT_VERSION = 1


@dataclass
class FitInfo:
    """What the fit did: device, stopping point, the validation curve and wall-clock seconds."""

    device: str
    best_iteration: int
    iterations: int
    seconds: float
    best_val_pr_auc: float | None = None
    history: list[float] = field(default_factory=list)


@dataclass
class Explanation:
    """Per-feature log-odds contributions of each row and how they were computed.

    Additive methods (TreeSHAP, Saabas) also give ``base``: ``contributions.sum(axis=1) + base`` equals the
    logit of :meth:`FraudModel.predict_proba` (the calibrated margin). Occlusion is not additive (``base`` None).
    """

    contributions: pd.DataFrame
    base: np.ndarray | None
    method: str


class FraudModel(ABC):
    """A trained model: ``predict_proba(df) -> np.ndarray`` of fraud probabilities, save/load, explanations."""

    model_type: str

    def __init__(self, preprocessor: Preprocessor, pos_weight: float, params: TrainParams, fit_info: FitInfo):
        self.preprocessor = preprocessor
        self.pos_weight = float(pos_weight)
        self.params = params
        self.fit_info = fit_info
        # The version's decision threshold and the policy that chose it (loopline.thresholds.ThresholdDecision
        # as a dict); None for a model saved before policies (scoring then uses scoring.threshold).
        self.decision: dict[str, Any] | None = None

    @property
    def threshold(self) -> float | None:
        """The decision threshold recorded with this model, if any."""
        return None if not self.decision else float(self.decision["threshold"])

    @abstractmethod
    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        """The weighted model's probability (before the prior correction)."""

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if len(df) == 0:
            return np.zeros(0, dtype=np.float64)
        return _correct_prior(self._raw_proba(df), self.pos_weight)

    @abstractmethod
    def feature_importance(self) -> dict[str, float] | None:
        """Built-in importance (XGBoost gain), or None when the model has none (use permutation importance)."""

    @abstractmethod
    def contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per-row, per-feature contributions to the log-odds (for reason codes); columns = input columns."""

    def explain(self, df: pd.DataFrame, method: str = "exact") -> Explanation:
        """Contributions with the method that produced them (``exact`` or the cheaper ``approx``)."""
        return Explanation(self.contributions(df), None, "occlusion")

    @abstractmethod
    def _save_weights(self, folder: Path) -> None: ...

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "input_columns": list(INPUT_COLUMNS),
            "pos_weight": self.pos_weight,
            "params": {**asdict(self.params), "hidden": list(self.params.hidden)},
            "preprocessor": self.preprocessor.to_dict(),
            "fit_info": asdict(self.fit_info),
        }
        if self.decision is not None:
            meta["decision"] = self.decision
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._save_weights(folder)
        return folder


def _check_recorded_columns(recorded: list[str] | None, folder: Path) -> None:
    """A model scores only the feature columns it was trained on: a change of ``features.windows`` since then is
    named here, before any data is read, instead of surfacing as a missing column mid-scoring."""
    if recorded is None or tuple(recorded) == INPUT_COLUMNS:
        return
    gone = [name for name in recorded if name not in INPUT_COLUMNS]
    new = [name for name in INPUT_COLUMNS if name not in recorded]
    detail = "; ".join(
        part
        for part in (
            f"trained on {', '.join(gone)}, which this configuration no longer computes" if gone else "",
            f"this configuration adds {', '.join(new)}" if new else "",
            "same columns in another order" if not gone and not new else "",
        )
        if part
    )
    raise ValueError(
        f"the model in {folder} does not match features.windows: {detail}. Retrain it (train_model) on the "
        "current features, or restore the features.windows it was trained with"
    )


def _pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))
