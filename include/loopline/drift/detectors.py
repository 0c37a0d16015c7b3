"""The drift detectors: :class:`DriftDetector` and its ``alibi`` and ``scipy`` backends, built from the config
(:func:`build_detector`) or from a saved folder (:func:`load_detector`). See :mod:`loopline.drift` for the tests,
the decision rule and the persistence format."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from loopline.drift.reports import DriftResult, DriftTest
from loopline.drift.segments import resolve
from loopline.drift.settings import MMD_FEATURE, SCORE_COLUMN, Backend, DetectorSettings
from loopline.drift.stats import correct, median_bandwidth, mmd_numpy, univariate_scipy

if TYPE_CHECKING:
    from loopline.config import DriftConfig

__all__ = ["AlibiDriftDetector", "DriftDetector", "ScipyDriftDetector", "build_detector", "load_detector"]

FORMAT_VERSION = 1
_STATE_FILE = "detector.json"
_ARRAYS_FILE = "reference.npz"


class DriftDetector(ABC):
    """Tests current frames against a reference frame. Build with :meth:`fit`, then call :meth:`test`.

    ``settings`` (a :class:`DetectorSettings`) or its fields as keywords say what to test and how.
    """

    backend: ClassVar[Backend]

    def __init__(self, settings: DetectorSettings | None = None, /, **kwargs: Any) -> None:
        if settings is not None and kwargs:
            raise TypeError("give a DetectorSettings or keyword settings, not both")
        self.settings = settings if settings is not None else DetectorSettings(**kwargs)
        self._fitted = False

    # -- reference ----------------------------------------------------------------------------------------

    def fit(self, reference: pd.DataFrame) -> DriftDetector:
        """Encode the reference (categories, standardization, MMD sample, bandwidth) and build the tests."""
        if len(reference) < 2:
            raise ValueError(f"the reference needs at least 2 rows, got {len(reference)}")
        _require_columns(reference, [*self.settings.numeric_features, *self.settings.categorical_features], "reference")
        self.categories = {
            name: sorted(str(v) for v in reference[name].dropna().unique())
            for name in self.settings.categorical_features
        }
        self.x_ref = self._encode(reference, "reference")
        numeric = self.x_ref[:, : len(self.settings.numeric_features)]
        self.mean = numeric.mean(axis=0)
        std = numeric.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        self.z_ref = np.zeros((0, len(self.settings.numeric_features)))
        self.sigma = math.nan
        if self.settings.mmd_sample_size > 0 and self.settings.numeric_features:
            self.z_ref = self._standardize(self._sample(numeric, salt=1))
            self.sigma = median_bandwidth(self.z_ref)
        self.score_ref = _score(reference)
        # Segments on the score need a scored reference; quantile bounds are fixed here, once per reference.
        segments = tuple(
            resolve(segment, reference)
            for segment in self.settings.segments
            if SCORE_COLUMN not in segment.features or self.score_ref is not None
        )
        self.settings = replace(self.settings, segments=segments)
        masks = [segment.mask(reference) for segment in self.settings.segments]
        self.s_ref = (np.column_stack(masks) if masks else np.zeros((len(reference), 0))).astype(np.int64)
        self._fitted = True
        self._build()
        return self

    def _encode(self, frame: pd.DataFrame, side: str) -> np.ndarray:
        """float64 matrix: numeric features, then categorical codes (unseen categories and nulls: "other")."""
        numeric = frame[list(self.settings.numeric_features)].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(numeric).any():
            bad = [n for n, col in zip(self.settings.numeric_features, numeric.T, strict=True) if np.isnan(col).any()]
            raise ValueError(f"the {side} frame has nulls in numeric feature(s) {', '.join(bad)}")
        codes = []
        for name in self.settings.categorical_features:
            known = self.categories[name]
            values = frame[name].astype("string")
            code = pd.Categorical(values, categories=known).codes.astype(np.float64)
            code[code < 0] = len(known)  # the one "other" code
            codes.append(code)
        return np.column_stack([numeric, *codes]) if codes else numeric

    def _standardize(self, numeric: np.ndarray) -> np.ndarray:
        return (numeric - self.mean) / self.std

    def _sample(self, rows: np.ndarray, salt: int) -> np.ndarray:
        if len(rows) <= self.settings.mmd_sample_size:
            return rows
        index = np.random.default_rng([self.settings.seed, salt]).choice(
            len(rows), self.settings.mmd_sample_size, replace=False
        )
        return rows[np.sort(index)]

    # -- tests ----------------------------------------------------------------------------------------------

    def test(self, current: pd.DataFrame, warming: Sequence[str] = ()) -> DriftResult:
        """Test ``current`` (feature columns, optionally ``score``) against the reference.

        ``warming`` names features whose history window was still filling (:func:`warming_features`): they
        are tested and reported with ``counted=False`` and are no signal, and neither are the multivariate
        and score tests, which mix them in.
        """
        if not self._fitted:
            raise RuntimeError("fit the detector on a reference frame first")
        if len(current) == 0:
            raise ValueError("the current frame is empty")
        _require_columns(current, [*self.settings.numeric_features, *self.settings.categorical_features], "current")
        x = self._encode(current, "current")
        n_numeric = len(self.settings.numeric_features)
        p_values, statistics, significant, threshold = self._univariate(x)
        effects = self._effects(x, statistics)
        drifted = significant & (effects >= self.settings.min_effect)
        names = [*self.settings.numeric_features, *self.settings.categorical_features]
        asked = set(warming)
        warming_tested = tuple(name for name in names if name in asked)
        rows = [
            DriftTest(
                name,
                "ks" if f < n_numeric else "chi2",
                float(statistics[f]),
                float(p_values[f]),
                threshold,
                bool(d),
                counted=name not in warming_tested,
                effect=float(effects[f]),
            )
            for f, (name, d) in enumerate(zip(names, drifted, strict=True))
        ]
        mixed_in = bool(warming_tested)  # the MMD's numeric features and the model's inputs include them
        multivariate: bool | None = None
        if len(self.z_ref) > 1 and len(current) > 1:
            z = self._standardize(self._sample(x[:, :n_numeric], salt=2))
            p_mmd, mmd2 = self._multivariate(z)
            multivariate = p_mmd < self.settings.p_value
            rows.append(
                DriftTest(MMD_FEATURE, "mmd", mmd2, p_mmd, self.settings.p_value, multivariate, counted=not mixed_in)
            )
        score_drifted: bool | None = None
        score = _score(current)
        if self.score_ref is not None and score is not None:
            p_score, d_score = self._score_test(score)
            score_drifted = p_score < self.settings.p_value and d_score >= self.settings.min_effect
            rows.append(
                DriftTest(
                    SCORE_COLUMN, "score_ks", d_score, p_score, self.settings.p_value, score_drifted,
                    counted=not mixed_in, effect=d_score,
                )
            )  # fmt: skip
        segment_rows = self._test_segments(current, asked, mixed_in)
        rows.extend(segment_rows)
        drifted_features = tuple(
            name for name, d in zip(names, drifted, strict=True) if d and name not in warming_tested
        )
        drifted_segments = tuple(row.feature for row in segment_rows if row.drifted and row.counted)
        signals = len(drifted_features) + self.settings.segment_signals * len(drifted_segments)
        if not mixed_in:
            signals += bool(multivariate) + bool(score_drifted)
        return DriftResult(
            backend=self.backend,
            tests=tuple(rows),
            drifted_features=drifted_features,
            multivariate_drifted=multivariate,
            score_drifted=score_drifted,
            signals=signals,
            min_drifted_features=self.settings.min_drifted_features,
            drift=signals >= self.settings.min_drifted_features,
            reference_rows=len(self.x_ref),
            current_rows=len(current),
            p_value=self.settings.p_value,
            correction=self.settings.correction,
            warming_features=warming_tested,
            drifted_segments=drifted_segments,
        )

    def _test_segments(self, current: pd.DataFrame, warming: set[str], mixed_in: bool) -> list[DriftTest]:
        """One ``segment`` row per segment the current frame can be tested on (a score segment needs scores).

        The segments form their own family, corrected like the features; a segment drifts only by growing."""
        usable = [
            i for i, segment in enumerate(self.settings.segments) if all(f in current.columns for f in segment.features)
        ]
        if not usable:
            return []
        s = np.column_stack([self.settings.segments[i].mask(current) for i in usable]).astype(np.int64)
        s_ref = self.s_ref[:, usable]
        p_values, statistics, significant, threshold = self._segment_test(s_ref, s)
        excess = s.mean(axis=0) - s_ref.mean(axis=0)
        rows = []
        for k, i in enumerate(usable):
            segment = self.settings.segments[i]
            uses = set(segment.features)
            counted = not (uses & warming) and not (SCORE_COLUMN in uses and mixed_in)
            drifted = bool(significant[k] and excess[k] >= self.settings.min_segment_excess)
            rows.append(
                DriftTest(
                    segment.name, "segment", float(statistics[k]), float(p_values[k]), threshold, drifted,
                    counted=counted, effect=float(excess[k]),
                )
            )  # fmt: skip
        return rows

    def _effects(self, x: np.ndarray, statistics: np.ndarray) -> np.ndarray:
        """Per feature: the KS distance (numeric; the backends' KS statistic) or the total variation distance
        between the reference's and the current category shares (categorical), computed here for both backends."""
        n_numeric = len(self.settings.numeric_features)
        effects = np.asarray(statistics, dtype=np.float64).copy()
        for j in range(len(self.settings.categorical_features)):
            column = n_numeric + j
            size = len(self.categories[self.settings.categorical_features[j]]) + 1  # + the "other" code
            ref = np.bincount(self.x_ref[:, column].astype(np.int64), minlength=size) / len(self.x_ref)
            cur = np.bincount(x[:, column].astype(np.int64), minlength=size) / len(x)
            effects[column] = 0.5 * np.abs(ref - cur).sum()
        return effects

    def _build(self) -> None:  # noqa: B027 - optional hook: backends that hold objects build them here
        """Build backend objects from the encoded reference (after :meth:`fit` and :func:`load_detector`)."""

    @abstractmethod
    def _univariate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(p-values float32, statistics, drifted per feature, corrected threshold)."""

    @abstractmethod
    def _multivariate(self, z: np.ndarray) -> tuple[float, float]:
        """(p-value, MMD²) of the standardized current sample against :attr:`z_ref`."""

    @abstractmethod
    def _score_test(self, score: np.ndarray) -> tuple[float, float]:
        """(p-value, KS statistic) of the current scores against the reference's."""

    @abstractmethod
    def _segment_test(self, s_ref: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(p-values float32, chi² statistics, significant per segment, corrected threshold) of the 0/1 segment
        membership columns: a chi-squared test of each segment's share, corrected over the segments."""

    # -- persistence ----------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``detector.json`` + ``reference.npz`` into the folder ``path`` (created); returns it."""
        if not self._fitted:
            raise RuntimeError("fit the detector before saving it")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "format_version": FORMAT_VERSION,
            "backend": self.backend,
            **self.settings.to_state(),
            "categories": self.categories,
            "sigma": None if math.isnan(self.sigma) else self.sigma,
            "created_with": _versions(),
        }
        (folder / _STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        arrays = {"x_ref": self.x_ref, "z_ref": self.z_ref, "mean": self.mean, "std": self.std, "s_ref": self.s_ref}
        if self.score_ref is not None:
            arrays["score_ref"] = self.score_ref
        np.savez_compressed(folder / _ARRAYS_FILE, **arrays)
        return folder

    @classmethod
    def load(cls, path: str | Path) -> DriftDetector:
        """:func:`load_detector` with the backend the folder was saved with (or this class's, on a subclass)."""
        return load_detector(path, backend=None if cls is DriftDetector else cls.backend)


class ScipyDriftDetector(DriftDetector):
    """Permissive backend: scipy KS / chi² with alibi's corrections, numpy MMD (see :mod:`loopline.drift`)."""

    backend: ClassVar[Backend] = "scipy"

    def _univariate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        p_values, statistics = univariate_scipy(self.x_ref, x, len(self.settings.numeric_features))
        drifted, threshold = correct(p_values, self.settings.p_value, self.settings.correction)
        return p_values, statistics, drifted, threshold

    def _multivariate(self, z: np.ndarray) -> tuple[float, float]:
        p_value, mmd2, _ = mmd_numpy(self.z_ref, z, self.sigma, self.settings.mmd_permutations, self.settings.seed)
        return p_value, mmd2

    def _score_test(self, score: np.ndarray) -> tuple[float, float]:
        from scipy.stats import ks_2samp

        assert self.score_ref is not None
        result = ks_2samp(self.score_ref, score, alternative="two-sided", method="asymp")
        return float(np.float32(result.pvalue)), float(np.float32(result.statistic))

    def _segment_test(self, s_ref: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        p_values, statistics = univariate_scipy(s_ref, s, 0)
        significant, threshold = correct(p_values, self.settings.p_value, self.settings.correction)
        return p_values, statistics, significant, threshold


class AlibiDriftDetector(DriftDetector):
    """alibi-detect backend (BSL 1.1): ``TabularDrift``, ``MMDDrift(backend="pytorch")``, ``KSDrift``,
    ``ChiSquareDrift`` (segments)."""

    backend: ClassVar[Backend] = "alibi"

    def _build(self) -> None:
        try:
            from alibi_detect.cd import KSDrift, MMDDrift, TabularDrift
        except ImportError as exc:
            raise ImportError(
                "the alibi drift backend needs alibi-detect (BSL 1.1); install it or set drift.backend: scipy"
            ) from exc

        n_numeric = len(self.settings.numeric_features)
        categorical = {n_numeric + i: None for i in range(len(self.settings.categorical_features))}
        # Categories of each categorical column are inferred from the reference's codes (None values).
        self._tabular = TabularDrift(
            self.x_ref,
            p_val=self.settings.p_value,
            categories_per_feature=categorical,
            correction=self.settings.correction,
        )
        self._mmd = None
        if len(self.z_ref) > 1:
            self._mmd = MMDDrift(
                self.z_ref.astype(np.float32),
                backend="pytorch",
                p_val=self.settings.p_value,
                sigma=np.array([self.sigma], dtype=np.float32),
                configure_kernel_from_x_ref=False,
                n_permutations=self.settings.mmd_permutations,
                device="cpu",
            )
        self._score_ks = None
        if self.score_ref is not None:
            self._score_ks = KSDrift(self.score_ref.reshape(-1, 1), p_val=self.settings.p_value)

    def _univariate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        data = self._tabular.predict(x, drift_type="batch", return_p_val=True, return_distance=True)["data"]
        p_values = np.asarray(data["p_val"])
        threshold = data["threshold"]
        if np.ndim(threshold):  # FDR with nothing significant: alibi returns every bound
            return p_values, np.asarray(data["distance"]), np.zeros(len(p_values), dtype=bool), float(threshold[0])
        drifted = np.asarray(p_values < threshold)
        if bool(drifted.any()) != bool(data["is_drift"]):
            raise RuntimeError("per-feature decisions disagree with alibi's batch decision")
        return p_values, np.asarray(data["distance"]), drifted, float(threshold)

    def _multivariate(self, z: np.ndarray) -> tuple[float, float]:
        import torch

        assert self._mmd is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            data = self._mmd.predict(z.astype(np.float32), return_p_val=True, return_distance=True)["data"]
        return float(data["p_val"]), float(data["distance"])

    def _score_test(self, score: np.ndarray) -> tuple[float, float]:
        assert self._score_ks is not None
        data = self._score_ks.predict(score.reshape(-1, 1), return_p_val=True, return_distance=True)["data"]
        return float(data["p_val"][0]), float(data["distance"][0])

    def _segment_test(self, s_ref: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        from alibi_detect.cd import ChiSquareDrift

        # Built per night: the segments a night can be tested on vary (score segments need scores), and
        # building on a few thousand 0/1 rows takes milliseconds.
        detector = ChiSquareDrift(s_ref, p_val=self.settings.p_value, correction=self.settings.correction)
        data = detector.predict(s, drift_type="batch", return_p_val=True, return_distance=True)["data"]
        p_values = np.asarray(data["p_val"])
        threshold = data["threshold"]
        if np.ndim(threshold):  # FDR with nothing significant: alibi returns every bound
            return p_values, np.asarray(data["distance"]), np.zeros(len(p_values), dtype=bool), float(threshold[0])
        return p_values, np.asarray(data["distance"]), np.asarray(p_values < threshold), float(threshold)


_BACKENDS: dict[str, type[DriftDetector]] = {"alibi": AlibiDriftDetector, "scipy": ScipyDriftDetector}


def build_detector(cfg_drift: DriftConfig, reference: pd.DataFrame, *, seed: int = 0) -> DriftDetector:
    """The configured backend fitted on ``reference``, sampled down to ``reference_sample_size`` rows (seeded),
    testing every feature but ``drift.exclude_features``."""
    if len(reference) > cfg_drift.reference_sample_size:
        reference = reference.sample(n=cfg_drift.reference_sample_size, random_state=seed).sort_index()
    detector = _BACKENDS[cfg_drift.backend](DetectorSettings.from_config(cfg_drift, seed=seed))
    return detector.fit(reference)


def load_detector(path: str | Path, backend: Backend | None = None) -> DriftDetector:
    """Rebuild a detector saved with :meth:`DriftDetector.save`; ``backend`` overrides the saved one."""
    folder = Path(path)
    state = json.loads((folder / _STATE_FILE).read_text(encoding="utf-8"))
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder}: drift detector format {state.get('format_version')} is not {FORMAT_VERSION}")
    cls = _BACKENDS[backend or state["backend"]]
    detector = cls(DetectorSettings.from_state(state))
    with np.load(folder / _ARRAYS_FILE, allow_pickle=False) as arrays:
        detector.x_ref = arrays["x_ref"]
        detector.z_ref = arrays["z_ref"]
        detector.mean = arrays["mean"]
        detector.std = arrays["std"]
        detector.score_ref = arrays["score_ref"] if "score_ref" in arrays.files else None
        detector.s_ref = (
            arrays["s_ref"] if "s_ref" in arrays.files else np.zeros((len(detector.x_ref), 0), dtype=np.int64)
        )
    detector.categories = {name: list(values) for name, values in state["categories"].items()}
    detector.sigma = math.nan if state["sigma"] is None else float(state["sigma"])
    detector._fitted = True
    detector._build()
    return detector


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], side: str) -> None:
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ValueError(f"the {side} frame lacks column(s) {', '.join(missing)}")


def _score(frame: pd.DataFrame) -> np.ndarray | None:
    if SCORE_COLUMN not in frame.columns:
        return None
    score = frame[SCORE_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
    score = score[~np.isnan(score)]
    return score if len(score) else None


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("alibi-detect", "scipy", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
