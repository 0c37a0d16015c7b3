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
"""

from __future__ import annotations

import copy
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.schemas import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from loopline.training import MODEL_TYPES

log = logging.getLogger(__name__)

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
INPUT_COLUMNS: tuple[str, ...] = (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES)
FORMAT_VERSION = 1


class DeviceUnavailableError(ValueError):
    """``--device cuda`` was asked for but no usable CUDA device is visible."""


# ---------------------------------------------------------------------------------------------------------
# Devices


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the trainer
        return False
    return bool(torch.cuda.is_available())


def xgboost_cuda_available() -> bool:
    """Whether XGBoost can train on a GPU here: a CUDA build and a visible device (one tiny probe fit)."""
    import warnings

    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        return False
    data = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0.0, 1.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 1}, data, num_boost_round=1)
        except xgb.core.XGBoostError:
            return False
    fell_back = any("GPU" in str(item.message) for item in caught)
    return not fell_back and "cuda" in json.loads(booster.save_config())["learner"]["generic_param"]["device"]


def resolve_device(requested: str = "auto", model_type: str = "xgboost") -> str:
    """``cpu`` or ``cuda``: ``auto`` takes CUDA when the model's library sees a GPU, ``cuda`` requires one."""
    if requested not in DEVICES:
        raise DeviceUnavailableError(f"unknown device {requested!r}; expected one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return "cpu"
    # XGBoost asks XGBoost (a probe fit; no torch import, which costs seconds), the MLP asks torch.
    available = xgboost_cuda_available() if model_type == "xgboost" else torch_cuda_available()
    if available:
        return "cuda"
    if requested == "cuda":
        raise DeviceUnavailableError(
            f"--device cuda was requested but no CUDA GPU is visible to {model_type} on this machine "
            f"({'torch.cuda.is_available() is False' if model_type == 'mlp' else 'XGBoost found no GPU'}); "
            "use --device auto or cpu, or run in the GPU pod"
        )
    return "cpu"


# ---------------------------------------------------------------------------------------------------------
# Hyper-parameters


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


# ---------------------------------------------------------------------------------------------------------
# Preprocessing


def _check_columns(df: pd.DataFrame) -> None:
    missing = [name for name in INPUT_COLUMNS if name not in df.columns]
    if missing:
        raise ValueError(f"input lacks the model's feature column(s): {', '.join(missing)}")


def _as_category_strings(values: pd.Series) -> pd.Series:
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values  # already strings (the feature job's output): no per-value conversion
    return values.astype("object").where(values.notna(), None).map(lambda v: None if v is None else str(v))


def _categorical(values: pd.Series, categories: list[str]) -> pd.Series:
    """Values as a categorical fixed to ``categories``; unseen values and missing ones become NaN."""
    return pd.Series(pd.Categorical(_as_category_strings(values), categories=categories), index=values.index)


def _numeric_matrix(df: pd.DataFrame) -> np.ndarray:
    matrix = df[list(NUMERIC_FEATURES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


@dataclass
class Preprocessor:
    """What both models need to turn a feature DataFrame into model input, fitted on the training split.

    ``categories``: the known values of each categorical column (sorted). ``center`` / ``scale`` / ``fill``
    describe the MLP's numeric transform: signed ``log1p`` (tames heavy tails such as amounts and counts),
    missing -> training median, then standardisation.
    """

    categories: dict[str, list[str]]
    center: list[float]
    scale: list[float]
    fill: list[float]

    @classmethod
    def fit(cls, df: pd.DataFrame) -> Preprocessor:
        _check_columns(df)
        categories = {name: sorted({str(v) for v in df[name].dropna().unique()}) for name in CATEGORICAL_FEATURES}
        transformed = cls._signed_log(_numeric_matrix(df))
        fill = np.nanmedian(transformed, axis=0)
        fill = np.where(np.isfinite(fill), fill, 0.0)
        filled = np.where(np.isnan(transformed), fill, transformed)
        center = filled.mean(axis=0)
        scale = filled.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        return cls(categories, center.tolist(), scale.tolist(), fill.tolist())

    @staticmethod
    def _signed_log(matrix: np.ndarray) -> np.ndarray:
        return np.sign(matrix) * np.log1p(np.abs(matrix))

    def xgboost_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """Numerics as float64 (inf -> NaN), categoricals as pandas categories fixed to the training set."""
        _check_columns(df)
        out = pd.DataFrame(_numeric_matrix(df), columns=list(NUMERIC_FEATURES), index=df.index)
        for name in CATEGORICAL_FEATURES:
            out[name] = _categorical(df[name], self.categories[name])  # unseen values become NaN (missing)
        return out[list(INPUT_COLUMNS)]

    def mlp_arrays(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(standardised numerics float32 [n, k], category indices int64 [n, c]; 0 = unknown or missing)."""
        _check_columns(df)
        transformed = self._signed_log(_numeric_matrix(df))
        fill = np.asarray(self.fill)
        filled = np.where(np.isnan(transformed), fill, transformed)
        numeric = ((filled - np.asarray(self.center)) / np.asarray(self.scale)).clip(-10, 10).astype(np.float32)
        codes = []
        for name in CATEGORICAL_FEATURES:
            codes.append(_categorical(df[name], self.categories[name]).cat.codes.to_numpy().astype(np.int64) + 1)
        categorical = np.stack(codes, axis=1) if codes else np.zeros((len(df), 0), dtype=np.int64)
        return numeric, categorical

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(**data)


def positive_weight(y: np.ndarray) -> float:
    positives = float(np.sum(y))
    negatives = float(len(y) - positives)
    return negatives / positives if positives else 1.0


def _correct_prior(q: np.ndarray, weight: float) -> np.ndarray:
    """Undo the odds shift of a positive-class weight: the probability an unweighted fit would give."""
    q = np.clip(q.astype(np.float64), 1e-12, 1 - 1e-12)
    return q / (q + weight * (1.0 - q))


# ---------------------------------------------------------------------------------------------------------
# The interface


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


# ---------------------------------------------------------------------------------------------------------
# XGBoost


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


# ---------------------------------------------------------------------------------------------------------
# PyTorch MLP


def _embedding_dim(cardinality: int) -> int:
    return int(min(16, max(2, round(1.6 * (cardinality + 1) ** 0.56))))


def _build_network(n_numeric: int, cardinalities: list[int], hidden: tuple[int, ...], dropout: float):
    import torch
    from torch import nn

    class TabularMLP(nn.Module):
        """Numerics + one embedding per categorical column (index 0 = unknown) -> MLP -> one logit."""

        def __init__(self):
            super().__init__()
            self.embeddings = nn.ModuleList(nn.Embedding(c + 1, _embedding_dim(c)) for c in cardinalities)
            width = n_numeric + sum(_embedding_dim(c) for c in cardinalities)
            layers: list[nn.Module] = []
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
                width = size
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def forward(self, numeric, categorical):
            parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
            return self.net(torch.cat(parts, dim=1)).squeeze(1)

    return TabularMLP()


class MLPModel(FraudModel):
    model_type = "mlp"

    def __init__(self, network, preprocessor: Preprocessor, pos_weight: float, params: TrainParams, fit_info: FitInfo):
        super().__init__(preprocessor, pos_weight, params, fit_info)
        self.network = network
        self.device = "cpu"
        self.reference_codes: list[int] = [0] * len(CATEGORICAL_FEATURES)

    def _logits(self, numeric: np.ndarray, categorical: np.ndarray, batch: int = 65536) -> np.ndarray:
        import torch

        self.network.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(numeric), batch):
                num = torch.from_numpy(numeric[start : start + batch]).to(self.device)
                cat = torch.from_numpy(categorical[start : start + batch]).to(self.device)
                out.append(self.network(num, cat).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        numeric, categorical = self.preprocessor.mlp_arrays(df)
        return 1.0 / (1.0 + np.exp(-self._logits(numeric, categorical)))

    def feature_importance(self) -> None:
        return None

    def contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        """Occlusion: the drop in log-odds when a feature is set to its training reference value
        (median for numerics, the most frequent known category for categoricals)."""
        numeric, categorical = self.preprocessor.mlp_arrays(df)
        base = self._logits(numeric, categorical)
        reference = (np.asarray(self.preprocessor.fill) - np.asarray(self.preprocessor.center)) / np.asarray(
            self.preprocessor.scale
        )
        out = {}
        for i, name in enumerate(CATEGORICAL_FEATURES):
            changed = categorical.copy()
            changed[:, i] = self.reference_codes[i]
            out[name] = base - self._logits(numeric, changed)
        for j, name in enumerate(NUMERIC_FEATURES):
            changed = numeric.copy()
            changed[:, j] = reference[j]
            out[name] = base - self._logits(changed, categorical)
        return pd.DataFrame(out, index=df.index)[list(INPUT_COLUMNS)]

    def _save_weights(self, folder: Path) -> None:
        import torch

        state = {key: value.detach().cpu() for key, value in self.network.state_dict().items()}
        torch.save({"state_dict": state, "reference_codes": list(self.reference_codes)}, folder / "mlp.pt")

    @classmethod
    def load(cls, folder: Path, pre: Preprocessor, pos_weight: float, params: TrainParams, info: FitInfo):
        import torch

        saved = torch.load(folder / "mlp.pt", map_location="cpu", weights_only=True)
        network = _build_network(
            len(NUMERIC_FEATURES), [len(pre.categories[c]) for c in CATEGORICAL_FEATURES], params.hidden, params.dropout
        )
        network.load_state_dict(saved["state_dict"])
        model = cls(network, pre, pos_weight, params, info)
        model.reference_codes = list(saved["reference_codes"])
        return model

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
    ) -> MLPModel:
        import torch
        import torch._dynamo  # torch.optim imports it on first use (seconds): keep that out of the timing

        started = time.perf_counter()
        torch.manual_seed(params.seed)
        generator = torch.Generator().manual_seed(params.seed)

        pre = Preprocessor.fit(train)
        weight = params.scale_pos_weight or positive_weight(y_train)
        numeric, categorical = pre.mlp_arrays(train)
        val_numeric, val_categorical = pre.mlp_arrays(val)
        cardinalities = [len(pre.categories[c]) for c in CATEGORICAL_FEATURES]
        network = _build_network(numeric.shape[1], cardinalities, params.hidden, params.dropout).to(device)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=params.learning_rate_for("mlp"), weight_decay=params.weight_decay
        )
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, dtype=torch.float32, device=device))
        x_num = torch.from_numpy(numeric).to(device)
        x_cat = torch.from_numpy(categorical).to(device)
        target = torch.from_numpy(np.asarray(y_train, dtype=np.float32)).to(device)
        model = cls(network, pre, weight, params, FitInfo(device=device, best_iteration=0, iterations=0, seconds=0.0))
        model.device = device
        model.reference_codes = [
            int(np.bincount(categorical[:, i]).argmax()) if len(categorical) else 0 for i in range(len(cardinalities))
        ]

        best_score, best_epoch, best_state, history = -1.0, 0, None, []
        n = len(numeric)
        for epoch in range(min(params.max_epochs, params.max_rounds)):
            network.train()
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, params.batch_size):
                index = order[start : start + params.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(network(x_num[index], x_cat[index]), target[index])
                loss.backward()
                optimizer.step()
            score = _pr_auc(y_val, model._logits(val_numeric, val_categorical))
            history.append(score)
            if on_iteration is not None:
                on_iteration(epoch, float(score))  # may raise to stop (a pruned search trial)
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy({k: v.detach().clone() for k, v in network.state_dict().items()})
            elif epoch - best_epoch >= params.patience:
                break
        if best_state is not None:
            network.load_state_dict(best_state)
        network.to("cpu")
        model.device = "cpu"
        model.fit_info = FitInfo(
            device=device,
            best_iteration=best_epoch,
            iterations=len(history),
            seconds=time.perf_counter() - started,
            best_val_pr_auc=best_score,
            history=history,
        )
        return model


# ---------------------------------------------------------------------------------------------------------


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
