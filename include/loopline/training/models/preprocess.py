"""Preprocessing shared by both model types: the input columns, the categories learnt in training, the numeric
matrix, and the positive-class weight with the prior correction that undoes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopline.schemas import CATEGORICAL_FEATURES, NUMERIC_FEATURES

INPUT_COLUMNS: tuple[str, ...] = (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES)


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
