"""Drift detection for the ``drift_monitor`` DAG: data drift, realized performance and the retraining decision.

No Airflow here: the DAG builds a detector once per model version from the model run's
``reference_sample.parquet`` (feature columns plus the model's ``score``), stores it next to the model with
:meth:`DriftDetector.save`, and tests each scored day against it.

Tests
-----
One row per test in :attr:`DriftResult.tests`:

============  =================================================================================================
``ks``        two-sample Kolmogorov-Smirnov (asymptotic p-value) on each numeric feature
``chi2``      chi-squared contingency test on each categorical feature. Categories are encoded as integer
              codes from the reference's categories; anything the reference never saw (and nulls) maps to one
              extra "other" code, so a brand-new country is one new column of the contingency table.
``mmd``       multivariate: kernel MMD² permutation test on the standardized numeric features of seeded
              subsamples (at most :data:`MMD_SAMPLE_SIZE` rows a side; Gaussian RBF kernel whose bandwidth is
              fixed from the reference by the median heuristic; :data:`MMD_PERMUTATIONS` permutations)
``score_ks``  Kolmogorov-Smirnov on the model's ``score``, when both frames carry a ``score`` column
``segment``   chi-squared test of the share of a :class:`Segment` (``drift.segments``: a named slice of traffic
              such as small card-not-present charges) in the current frame against its share in the
              reference
============  =================================================================================================

The ``ks`` and ``chi2`` tests form one family: the configured ``drift.p_value`` is corrected over all of them
with ``drift.correction`` (``bonferroni``: level ``p_value / n``; ``fdr``: Benjamini-Hochberg at q =
``p_value``), and each row's ``threshold`` is the corrected level its p-value had to be below. ``mmd`` and
``score_ks`` are single tests at ``p_value``. The ``segment`` tests form a second family, corrected the same way.

Segments
--------
A new fraud pattern is rare: card testing or a surge of compromised cards touches about 1% of a night's
transactions, which moves no feature's whole distribution by more than a few hundredths (measured through the
real pipeline: below the largest KS distance of stable nights). It does multiply the share of its own slice
of traffic. A :class:`Segment` names such a slice by conditions on numeric features or the ``score``
(``feature op value``, or ``feature op`` a ``reference_quantile`` of the reference, fixed when the detector is
fitted). A segment drifts when its share grew (current less reference) by at least ``min_segment_excess`` and
the chi-squared p-value of its 0/1 membership is below the corrected level; a segment that shrinks never
drifts. A segment on a warming feature is not counted, nor one on the ``score`` while any feature warms.

``day_of_week`` is not tested (:data:`EXCLUDED_FEATURES`): a scored day holds one weekday, so against a
multi-day reference it would drift every day.

Warm-up
-------
A history feature moves with the age of the lake until its window is full: 30-day counts grow while the
lake is younger than 30 days, and the label-based risk rates keep gathering evidence until the lake holds
``features.risk_window_days + features.label_maturity_days`` of labels. :func:`feature_horizons` says how
many days of lake history each feature needs; :func:`warming_features` names those whose window was not
yet full on the reference's first day. :meth:`DriftDetector.test` still tests and reports them, but they
count as no signal (``counted=False``): their drift says how old the lake is, not that behaviour changed.
Nor, while any tested feature warms up, do the ``mmd`` test (its numeric features include them) and the
``score_ks`` test (the model reads them): on a young lake both moved with the label-based risk rates alone.

Decision rule
-------------
A test drifts when its p-value is below its threshold *and* its effect reaches ``drift.min_effect``: the KS
distance for numeric features and the score, the total variation distance between the category shares for
categorical ones. With thousands of rows a night, a p-value alone flags shifts far too small to matter
(measured through the real pipeline: on 30 stable nights the largest effect of a feature whose window was
full was 0.036, on drifted nights the drifted features reached 0.10-0.34). Every drifted feature is one
*signal*, and so are a drifted ``mmd`` and a drifted ``score_ks``; a grown segment counts
``segment_signals`` (``drift.segment_signals``, 2 by default: it names a fraud pattern, and its floor sits
several times above stable nights' growth, so it is enough alone). The day has
drifted when there are at least ``drift.min_drifted_features`` signals (default 2). So one feature alone,
which happens by chance on up to ``p_value`` of stable days, is not enough; one feature that also moves the
model's score distribution (or the joint distribution) is; and a shift of one underlying quantity that shows
in several features (amounts: ``amount_eur``, ``log_amount``, ``sum_*`` ...) is. The MMD test alone is not
trusted either: rows of a day are not independent draws (the same customers, bursts of one card), and on a
stable day of the generator it reached p < 0.05 with 10-20% of the reference subsamples tried.

Backends
--------
``alibi`` (alibi-detect, BSL 1.1: production use needs a commercial licence): ``TabularDrift`` (alibi's
``KSDrift`` test on the numeric columns and ``ChiSquareDrift`` test on the categorical codes, in one detector
so that the correction spans all features), ``MMDDrift(backend="pytorch")``, ``KSDrift`` on the score and
``ChiSquareDrift`` on the segments' 0/1 membership columns.

``scipy`` (permissive): the same ``scipy.stats.ks_2samp(method="asymp")`` and ``chi2_contingency`` calls on the
same encoded arrays, p-values kept as float32 and corrected exactly as alibi does
(``alibi_detect.utils.statstest.fdr`` for FDR), so the per-feature and per-segment decisions, p-values and
thresholds are identical to alibi's. Its ``mmd`` is a numpy implementation of alibi's statistic (same kernel,
same bandwidth, same samples, same p-value formula) with its own seeded permutations: the MMD² is the same,
its p-value agrees up to permutation noise (about ±0.02 around 0.05 with 100 permutations).

Persistence
-----------
:meth:`DriftDetector.save` writes a folder holding ``detector.json`` (settings, feature lists, the reference's
categories, standardization and kernel bandwidth) and ``reference.npz`` (the encoded reference arrays); no
pickle, so loading runs no code from the artifact and does not depend on the alibi-detect version.
:func:`load_detector` rebuilds the detector (building alibi's objects from the stored arrays takes
milliseconds); a folder saved by one backend loads into the other with ``backend=``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from loopline.schemas import CATEGORICAL_FEATURES, NUMERIC_FEATURES

if TYPE_CHECKING:
    from loopline.config import DriftConfig

__all__ = [
    "EXCLUDED_FEATURES",
    "LABEL_FEATURES",
    "LONG_WINDOW_FEATURES",
    "MMD_PERMUTATIONS",
    "MMD_SAMPLE_SIZE",
    "SCORE_COLUMN",
    "AlibiDriftDetector",
    "Condition",
    "Decision",
    "DriftDetector",
    "DriftResult",
    "DriftTest",
    "ScipyDriftDetector",
    "Segment",
    "build_detector",
    "correct",
    "drift_kind",
    "feature_horizons",
    "load_detector",
    "performance_drop",
    "realized_performance",
    "retrain_decision",
    "warming_features",
]

Backend = Literal["alibi", "scipy"]
Correction = Literal["bonferroni", "fdr"]
TestName = Literal["ks", "chi2", "mmd", "score_ks", "segment"]
Op = Literal["<", "<=", ">", ">=", "==", "!="]

SCORE_COLUMN = "score"
# A day holds a single weekday: against a multi-day reference this feature would drift every day.
EXCLUDED_FEATURES: tuple[str, ...] = ("day_of_week",)
MMD_SAMPLE_SIZE = 1000  # rows a side for the MMD test (its kernel matrix is (2n)²: 2000² floats = 16 MB)
MMD_PERMUTATIONS = 100
MMD_FEATURE = "numeric_features"  # the ``feature`` of the mmd row
FORMAT_VERSION = 1
_OPS: dict[str, Any] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
}  # fmt: skip
_STATE_FILE = "detector.json"
_ARRAYS_FILE = "reference.npz"


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Condition:
    """``feature op value``; ``reference_quantile`` sets ``value`` from the reference when the detector is fitted."""

    feature: str
    op: Op
    value: float | None = None
    reference_quantile: float | None = None


@dataclass(frozen=True)
class Segment:
    """A named slice of traffic: the rows where every condition holds (see "Segments" in the module docstring)."""

    name: str
    where: tuple[Condition, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.feature for c in self.where))

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows in the segment (every ``value`` must be set: fit the detector first)."""
        inside = np.ones(len(frame), dtype=bool)
        for c in self.where:
            if c.value is None:
                raise ValueError(f"segment {self.name!r}: {c.feature} has no value yet (fit on a reference first)")
            inside &= _OPS[c.op](frame[c.feature].to_numpy(dtype=np.float64, na_value=np.nan), c.value)
        return inside


@dataclass(frozen=True)
class DriftTest:
    """One statistical test: ``drifted`` is ``p_value < threshold`` and ``effect >= min_effect`` (the KS distance,
    or the total variation distance of a categorical feature; NaN for MMD, which has no floor; for a segment, its
    share of the current frame less its share of the reference, against ``min_segment_excess``); ``counted`` is
    False for a test that is no signal while features warm up (tested and reported all the same)."""

    feature: str
    test: TestName
    statistic: float
    p_value: float
    threshold: float
    drifted: bool
    counted: bool = True
    effect: float = math.nan


@dataclass(frozen=True)
class DriftResult:
    """What one current frame looks like against the reference (see the module docstring for the rule)."""

    backend: Backend
    tests: tuple[DriftTest, ...]
    drifted_features: tuple[str, ...]
    multivariate_drifted: bool | None  # None: not tested
    score_drifted: bool | None  # None: no score column on one side
    signals: int
    min_drifted_features: int
    drift: bool
    reference_rows: int
    current_rows: int
    p_value: float
    correction: Correction
    warming_features: tuple[str, ...] = ()  # tested, not counted: their windows were still filling
    drifted_segments: tuple[str, ...] = ()  # counted segments whose share grew (each worth segment_signals)

    @property
    def feature_tests(self) -> tuple[DriftTest, ...]:
        """The per-feature (``ks`` and ``chi2``) rows."""
        return tuple(row for row in self.tests if row.test in ("ks", "chi2"))

    def row(self, feature: str) -> DriftTest:
        """The test row of ``feature`` (``score`` for the score test, :data:`MMD_FEATURE` for MMD)."""
        for row in self.tests:
            if row.feature == feature:
                return row
        raise KeyError(f"no drift test for {feature!r}")

    def summary(self) -> str:
        """One line for logs and trigger reasons."""
        parts = [f"{len(self.drifted_features)} drifted feature(s)"]
        if self.drifted_features:
            parts[0] += f" ({', '.join(self.drifted_features)})"
        if self.multivariate_drifted is not None:
            parts.append(f"multivariate {'drifted' if self.multivariate_drifted else 'stable'}")
        if self.score_drifted is not None:
            parts.append(f"score {'drifted' if self.score_drifted else 'stable'}")
        if self.drifted_segments:
            parts.append(f"segment(s) grown: {', '.join(self.drifted_segments)}")
        verdict = "drift" if self.drift else "no drift"
        line = f"{verdict}: {', '.join(parts)}; {self.signals} signal(s), {self.min_drifted_features} needed"
        uncounted = [row for row in self.tests if not row.counted and row.drifted]
        warming = ["multivariate" if row.test == "mmd" else row.feature for row in uncounted]
        if warming:
            line += f"; not counted, windows still filling: {', '.join(warming)}"
        return line

    def to_frame(self) -> pd.DataFrame:
        """The test rows as a frame (feature, test, statistic, p_value, threshold, drifted)."""
        return pd.DataFrame([asdict(row) for row in self.tests])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (for XCom, MLflow ``log_dict`` and reports)."""
        out = asdict(self)
        # NaN (no effect for MMD, a test that could not be computed) is not JSON: None instead
        out["tests"] = [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(row).items()}
            for row in self.tests
        ]
        out["drifted_features"] = list(self.drifted_features)
        out["warming_features"] = list(self.warming_features)
        out["drifted_segments"] = list(self.drifted_segments)
        out["summary"] = self.summary()
        return out


# ---------------------------------------------------------------------------------------------------------
# Shared statistics (the scipy backend uses them; the alibi backend only its corrections' twins)


def correct(p_values: np.ndarray, level: float, correction: Correction) -> tuple[np.ndarray, float]:
    """Per-test drift decisions and the corrected level, exactly as alibi-detect's univariate detectors decide.

    ``bonferroni``: ``p < level / n``. ``fdr``: Benjamini-Hochberg as ``alibi_detect.utils.statstest.fdr``:
    sorted p-values against ``level * i / n``; the threshold is the largest such bound a sorted p-value is
    below, and a test drifts when its p-value is below it. When nothing is significant the reported threshold
    is ``level / n`` (the bound the smallest p-value missed). ``p_values`` should be float32 as alibi's are:
    the comparisons then round the same way.
    """
    n = len(p_values)
    if n == 0:
        return np.zeros(0, dtype=bool), level
    if correction == "bonferroni":
        threshold = level / n
        return np.asarray(p_values < threshold), float(threshold)
    if correction != "fdr":
        raise ValueError(f"unknown correction {correction!r}: bonferroni or fdr")
    bounds = level * (np.arange(n) + 1) / n
    below = np.sort(p_values) < bounds
    if not below.any():
        return np.zeros(n, dtype=bool), float(bounds[0])
    threshold = bounds[np.where(below)[0].max()]
    return np.asarray(p_values < threshold), float(threshold)


def _univariate_scipy(x_ref: np.ndarray, x: np.ndarray, n_numeric: int) -> tuple[np.ndarray, np.ndarray]:
    """p-values and statistics (float32, like alibi's) of KS on the first ``n_numeric`` columns, chi² on the rest.

    The chi² table counts the union of the categories seen on either side (as alibi's ``TabularDrift``), and
    ``chi2_contingency`` is called with its defaults (Yates' correction on 2x2 tables, as alibi does).
    """
    from scipy.stats import chi2_contingency, ks_2samp

    n_features = x_ref.shape[1]
    p_values = np.zeros(n_features, dtype=np.float32)
    statistics = np.zeros_like(p_values)
    for f in range(n_features):
        if f < n_numeric:
            result = ks_2samp(x_ref[:, f], x[:, f], alternative="two-sided", method="asymp")
            statistics[f], p_values[f] = result.statistic, result.pvalue
        else:
            ref_values, ref_counts = np.unique(x_ref[:, f], return_counts=True)
            cur_values, cur_counts = np.unique(x[:, f], return_counts=True)
            categories = np.union1d(ref_values, cur_values)
            table = np.zeros((2, len(categories)), dtype=np.int64)
            table[0, np.searchsorted(categories, ref_values)] = ref_counts
            table[1, np.searchsorted(categories, cur_values)] = cur_counts
            statistics[f], p_values[f], _, _ = chi2_contingency(table)
    return p_values, statistics


def _median_bandwidth(z: np.ndarray) -> float:
    """alibi-detect's ``sigma_median`` on ``(z, z)``: sqrt(0.5 * median of the squared pairwise distances,
    counting past the zero diagonal)."""
    dist = _squared_distances(z, z)
    n = z.shape[0]
    index = n + (dist.size - n) // 2 - 1
    return float(math.sqrt(0.5 * float(np.sort(dist, axis=None)[index])))


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x2 = np.sum(x * x, axis=1)[:, None]
    y2 = np.sum(y * y, axis=1)[None, :]
    return np.maximum(x2 + y2 - 2.0 * (x @ y.T), 1e-30)


def _mmd_numpy(
    z_ref: np.ndarray, z: np.ndarray, sigma: float, permutations: int, seed: int
) -> tuple[float, float, float]:
    """alibi's ``MMDDriftTorch.score`` in numpy: (p-value, MMD², MMD² threshold at the 5% tail)."""
    joint = np.vstack([z_ref, z]).astype(np.float64)
    kernel = np.exp(-_squared_distances(joint, joint) / (2.0 * sigma**2))
    np.fill_diagonal(kernel, 0.0)
    n_total, m = joint.shape[0], z.shape[0]
    n = n_total - m
    # Column 0: the observed split; then one column per permutation. ``a`` marks the reference side.
    rng = np.random.default_rng(seed)
    a = np.zeros((n_total, permutations + 1))
    a[:n, 0] = 1.0
    for column in range(1, permutations + 1):
        a[rng.permutation(n_total)[:n], column] = 1.0
    b = 1.0 - a
    ka, kb = kernel @ a, kernel @ b
    k_xx, k_yy, k_xy = (a * ka).sum(0), (b * kb).sum(0), (a * kb).sum(0)
    mmd2 = k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2.0 * k_xy / (n * m)
    observed, permuted = float(mmd2[0]), mmd2[1:]
    p_value = float((observed <= permuted).mean())
    return p_value, observed, float(np.sort(permuted)[::-1][int(0.05 * permutations)])


# ---------------------------------------------------------------------------------------------------------
# Detectors


class DriftDetector(ABC):
    """Tests current frames against a reference frame. Build with :meth:`fit`, then call :meth:`test`.

    Args:
        p_value: significance level of the feature family (corrected) and of the single tests.
        correction: ``bonferroni`` or ``fdr`` over the feature tests.
        min_drifted_features: signals needed for :attr:`DriftResult.drift`.
        numeric_features / categorical_features: the columns to test (default: the feature table's, less
            :data:`EXCLUDED_FEATURES`).
        seed: fixes the MMD subsamples and permutations.
        mmd_sample_size: rows a side for MMD (0 turns the multivariate test off).
        min_effect: smallest KS / total variation distance that counts as drift (0: the p-value alone).
        segments: slices of traffic whose share is tested (conditions on numeric features or ``score``).
        min_segment_excess: smallest growth of a segment's share (current less reference) that counts as drift.
        segment_signals: signals a grown segment counts for (``min_drifted_features``: one is enough).
    """

    backend: ClassVar[Backend]

    def __init__(
        self,
        *,
        p_value: float = 0.05,
        correction: Correction = "bonferroni",
        min_drifted_features: int = 2,
        numeric_features: Sequence[str] | None = None,
        categorical_features: Sequence[str] | None = None,
        seed: int = 0,
        mmd_sample_size: int = MMD_SAMPLE_SIZE,
        mmd_permutations: int = MMD_PERMUTATIONS,
        min_effect: float = 0.0,
        segments: Sequence[Segment] = (),
        min_segment_excess: float = 0.0,
        segment_signals: int = 1,
    ) -> None:
        if not 0 < p_value < 1:
            raise ValueError(f"p_value must lie in (0, 1), got {p_value}")
        if correction not in ("bonferroni", "fdr"):
            raise ValueError(f"unknown correction {correction!r}: bonferroni or fdr")
        if min_drifted_features < 1:
            raise ValueError(f"min_drifted_features must be at least 1, got {min_drifted_features}")
        self.p_value = float(p_value)
        self.correction: Correction = correction
        self.min_drifted_features = int(min_drifted_features)
        self.numeric_features = list(
            numeric_features
            if numeric_features is not None
            else [f for f in NUMERIC_FEATURES if f not in EXCLUDED_FEATURES]
        )
        self.categorical_features = list(
            categorical_features
            if categorical_features is not None
            else [f for f in CATEGORICAL_FEATURES if f not in EXCLUDED_FEATURES]
        )
        if not self.numeric_features and not self.categorical_features:
            raise ValueError("no features to test")
        self.seed = int(seed)
        self.mmd_sample_size = int(mmd_sample_size)
        self.mmd_permutations = int(mmd_permutations)
        if not 0 <= min_effect < 1:
            raise ValueError(f"min_effect must lie in [0, 1), got {min_effect}")
        self.min_effect = float(min_effect)
        if not 0 <= min_segment_excess < 1:
            raise ValueError(f"min_segment_excess must lie in [0, 1), got {min_segment_excess}")
        self.min_segment_excess = float(min_segment_excess)
        if segment_signals < 1:
            raise ValueError(f"segment_signals must be at least 1, got {segment_signals}")
        self.segment_signals = int(segment_signals)
        allowed = {*NUMERIC_FEATURES, *self.numeric_features, SCORE_COLUMN}  # excluded features may slice too
        names = [segment.name for segment in segments]
        for segment in segments:
            if names.count(segment.name) > 1:
                raise ValueError(f"segment {segment.name!r} is defined twice")
            if not segment.where:
                raise ValueError(f"segment {segment.name!r} has no condition")
            unknown = [f for f in segment.features if f not in allowed]
            if unknown:
                raise ValueError(
                    f"segment {segment.name!r}: {', '.join(unknown)} is not a numeric feature or {SCORE_COLUMN!r}"
                )
        self.segments: tuple[Segment, ...] = tuple(segments)
        self._fitted = False

    # -- reference ----------------------------------------------------------------------------------------

    def fit(self, reference: pd.DataFrame) -> DriftDetector:
        """Encode the reference (categories, standardization, MMD sample, bandwidth) and build the tests."""
        if len(reference) < 2:
            raise ValueError(f"the reference needs at least 2 rows, got {len(reference)}")
        _require_columns(reference, [*self.numeric_features, *self.categorical_features], "reference")
        self.categories = {
            name: sorted(str(v) for v in reference[name].dropna().unique()) for name in self.categorical_features
        }
        self.x_ref = self._encode(reference, "reference")
        numeric = self.x_ref[:, : len(self.numeric_features)]
        self.mean = numeric.mean(axis=0)
        std = numeric.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        self.z_ref = np.zeros((0, len(self.numeric_features)))
        self.sigma = math.nan
        if self.mmd_sample_size > 0 and self.numeric_features:
            self.z_ref = self._standardize(self._sample(numeric, salt=1))
            self.sigma = _median_bandwidth(self.z_ref)
        self.score_ref = _score(reference)
        # Segments on the score need a scored reference; quantile bounds are fixed here, once per reference.
        self.segments = tuple(
            _resolve(segment, reference)
            for segment in self.segments
            if SCORE_COLUMN not in segment.features or self.score_ref is not None
        )
        masks = [segment.mask(reference) for segment in self.segments]
        self.s_ref = (np.column_stack(masks) if masks else np.zeros((len(reference), 0))).astype(np.int64)
        self._fitted = True
        self._build()
        return self

    def _encode(self, frame: pd.DataFrame, side: str) -> np.ndarray:
        """float64 matrix: numeric features, then categorical codes (unseen categories and nulls: "other")."""
        numeric = frame[self.numeric_features].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(numeric).any():
            bad = [n for n, col in zip(self.numeric_features, numeric.T, strict=True) if np.isnan(col).any()]
            raise ValueError(f"the {side} frame has nulls in numeric feature(s) {', '.join(bad)}")
        codes = []
        for name in self.categorical_features:
            known = self.categories[name]
            values = frame[name].astype("string")
            code = pd.Categorical(values, categories=known).codes.astype(np.float64)
            code[code < 0] = len(known)  # the one "other" code
            codes.append(code)
        return np.column_stack([numeric, *codes]) if codes else numeric

    def _standardize(self, numeric: np.ndarray) -> np.ndarray:
        return (numeric - self.mean) / self.std

    def _sample(self, rows: np.ndarray, salt: int) -> np.ndarray:
        if len(rows) <= self.mmd_sample_size:
            return rows
        index = np.random.default_rng([self.seed, salt]).choice(len(rows), self.mmd_sample_size, replace=False)
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
        _require_columns(current, [*self.numeric_features, *self.categorical_features], "current")
        x = self._encode(current, "current")
        n_numeric = len(self.numeric_features)
        p_values, statistics, significant, threshold = self._univariate(x)
        effects = self._effects(x, statistics)
        drifted = significant & (effects >= self.min_effect)
        names = [*self.numeric_features, *self.categorical_features]
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
            multivariate = p_mmd < self.p_value
            rows.append(DriftTest(MMD_FEATURE, "mmd", mmd2, p_mmd, self.p_value, multivariate, counted=not mixed_in))
        score_drifted: bool | None = None
        score = _score(current)
        if self.score_ref is not None and score is not None:
            p_score, d_score = self._score_test(score)
            score_drifted = p_score < self.p_value and d_score >= self.min_effect
            rows.append(
                DriftTest(
                    SCORE_COLUMN, "score_ks", d_score, p_score, self.p_value, score_drifted,
                    counted=not mixed_in, effect=d_score,
                )
            )  # fmt: skip
        segment_rows = self._test_segments(current, asked, mixed_in)
        rows.extend(segment_rows)
        drifted_features = tuple(
            name for name, d in zip(names, drifted, strict=True) if d and name not in warming_tested
        )
        drifted_segments = tuple(row.feature for row in segment_rows if row.drifted and row.counted)
        signals = len(drifted_features) + self.segment_signals * len(drifted_segments)
        if not mixed_in:
            signals += bool(multivariate) + bool(score_drifted)
        return DriftResult(
            backend=self.backend,
            tests=tuple(rows),
            drifted_features=drifted_features,
            multivariate_drifted=multivariate,
            score_drifted=score_drifted,
            signals=signals,
            min_drifted_features=self.min_drifted_features,
            drift=signals >= self.min_drifted_features,
            reference_rows=len(self.x_ref),
            current_rows=len(current),
            p_value=self.p_value,
            correction=self.correction,
            warming_features=warming_tested,
            drifted_segments=drifted_segments,
        )

    def _test_segments(self, current: pd.DataFrame, warming: set[str], mixed_in: bool) -> list[DriftTest]:
        """One ``segment`` row per segment the current frame can be tested on (a score segment needs scores).

        The segments form their own family, corrected like the features; a segment drifts only by growing."""
        usable = [i for i, segment in enumerate(self.segments) if all(f in current.columns for f in segment.features)]
        if not usable:
            return []
        s = np.column_stack([self.segments[i].mask(current) for i in usable]).astype(np.int64)
        s_ref = self.s_ref[:, usable]
        p_values, statistics, significant, threshold = self._segment_test(s_ref, s)
        excess = s.mean(axis=0) - s_ref.mean(axis=0)
        rows = []
        for k, i in enumerate(usable):
            segment = self.segments[i]
            uses = set(segment.features)
            counted = not (uses & warming) and not (SCORE_COLUMN in uses and mixed_in)
            drifted = bool(significant[k] and excess[k] >= self.min_segment_excess)
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
        n_numeric = len(self.numeric_features)
        effects = np.asarray(statistics, dtype=np.float64).copy()
        for j in range(len(self.categorical_features)):
            column = n_numeric + j
            size = len(self.categories[self.categorical_features[j]]) + 1  # + the "other" code
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
            "p_value": self.p_value,
            "correction": self.correction,
            "min_drifted_features": self.min_drifted_features,
            "numeric_features": self.numeric_features,
            "categorical_features": self.categorical_features,
            "categories": self.categories,
            "seed": self.seed,
            "mmd_sample_size": self.mmd_sample_size,
            "mmd_permutations": self.mmd_permutations,
            "min_effect": self.min_effect,
            "segments": [asdict(segment) for segment in self.segments],
            "min_segment_excess": self.min_segment_excess,
            "segment_signals": self.segment_signals,
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
    """Permissive backend: scipy KS / chi² with alibi's corrections, numpy MMD (see the module docstring)."""

    backend: ClassVar[Backend] = "scipy"

    def _univariate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        p_values, statistics = _univariate_scipy(self.x_ref, x, len(self.numeric_features))
        drifted, threshold = correct(p_values, self.p_value, self.correction)
        return p_values, statistics, drifted, threshold

    def _multivariate(self, z: np.ndarray) -> tuple[float, float]:
        p_value, mmd2, _ = _mmd_numpy(self.z_ref, z, self.sigma, self.mmd_permutations, self.seed)
        return p_value, mmd2

    def _score_test(self, score: np.ndarray) -> tuple[float, float]:
        from scipy.stats import ks_2samp

        assert self.score_ref is not None
        result = ks_2samp(self.score_ref, score, alternative="two-sided", method="asymp")
        return float(np.float32(result.pvalue)), float(np.float32(result.statistic))

    def _segment_test(self, s_ref: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        p_values, statistics = _univariate_scipy(s_ref, s, 0)
        significant, threshold = correct(p_values, self.p_value, self.correction)
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

        n_numeric = len(self.numeric_features)
        categorical = {n_numeric + i: None for i in range(len(self.categorical_features))}
        # Categories of each categorical column are inferred from the reference's codes (None values).
        self._tabular = TabularDrift(
            self.x_ref, p_val=self.p_value, categories_per_feature=categorical, correction=self.correction
        )
        self._mmd = None
        if len(self.z_ref) > 1:
            self._mmd = MMDDrift(
                self.z_ref.astype(np.float32),
                backend="pytorch",
                p_val=self.p_value,
                sigma=np.array([self.sigma], dtype=np.float32),
                configure_kernel_from_x_ref=False,
                n_permutations=self.mmd_permutations,
                device="cpu",
            )
        self._score_ks = None
        if self.score_ref is not None:
            self._score_ks = KSDrift(self.score_ref.reshape(-1, 1), p_val=self.p_value)

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
            torch.manual_seed(self.seed)
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
        detector = ChiSquareDrift(s_ref, p_val=self.p_value, correction=self.correction)
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
    excluded = set(cfg_drift.exclude_features)
    unknown = sorted(excluded - set(NUMERIC_FEATURES) - set(CATEGORICAL_FEATURES))
    if unknown:
        raise ValueError(f"drift.exclude_features names no feature: {', '.join(unknown)}")
    detector = _BACKENDS[cfg_drift.backend](
        p_value=cfg_drift.p_value,
        correction=cfg_drift.correction,
        min_drifted_features=cfg_drift.min_drifted_features,
        min_effect=cfg_drift.min_effect,
        numeric_features=[f for f in NUMERIC_FEATURES if f not in excluded],
        categorical_features=[f for f in CATEGORICAL_FEATURES if f not in excluded],
        seed=seed,
        segments=[
            Segment(s.name, tuple(Condition(c.feature, c.op, c.value, c.reference_quantile) for c in s.where))
            for s in cfg_drift.segments
        ],
        min_segment_excess=cfg_drift.min_segment_excess,
        segment_signals=cfg_drift.segment_signals,
    )
    return detector.fit(reference)


# History features that span the longest window without carrying its name: the customer state behind them
# (last transaction, merchants and countries seen, active days) covers the longest window.
LONG_WINDOW_FEATURES: tuple[str, ...] = (
    "seconds_since_last_txn",
    "is_new_merchant",
    "is_new_country",
    "customer_history_days",
)
LABEL_FEATURES: tuple[str, ...] = ("merchant_risk", "category_risk", "merchant_label_count")


def feature_horizons(
    window_hours: Mapping[str, int], *, risk_window_days: int, label_maturity_days: int
) -> dict[str, int]:
    """Days of lake history each history feature needs before its distribution stops depending on the lake's
    age (features not named need none). ``window_hours`` is ``features.windows`` in hours (``{"30d": 720}``):
    a feature named ``*_<window>`` needs that window; the risk rates count labels reported in
    ``risk_window_days`` before ``ds``, and the labels of a day keep arriving for ``label_maturity_days``."""
    days = {window: max(1, math.ceil(hours / 24)) for window, hours in window_hours.items()}
    horizons = {name: days[window] for window in days for name in NUMERIC_FEATURES if name.endswith(f"_{window}")}
    horizons |= dict.fromkeys(LONG_WINDOW_FEATURES, max(days.values(), default=0))
    horizons |= dict.fromkeys(LABEL_FEATURES, risk_window_days + label_maturity_days)
    return horizons


def warming_features(horizons: Mapping[str, int], lake_start: dt.date, reference_start: dt.date) -> tuple[str, ...]:
    """Features whose window was not yet full on the reference's first day, in ``horizons`` order.

    Once the reference itself sits on a full window, the later days tested against it do too."""
    history_days = (reference_start - lake_start).days
    return tuple(name for name, days in horizons.items() if days > history_days)


def load_detector(path: str | Path, backend: Backend | None = None) -> DriftDetector:
    """Rebuild a detector saved with :meth:`DriftDetector.save`; ``backend`` overrides the saved one."""
    folder = Path(path)
    state = json.loads((folder / _STATE_FILE).read_text(encoding="utf-8"))
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder}: drift detector format {state.get('format_version')} is not {FORMAT_VERSION}")
    cls = _BACKENDS[backend or state["backend"]]
    detector = cls(
        p_value=state["p_value"],
        correction=state["correction"],
        min_drifted_features=state["min_drifted_features"],
        numeric_features=state["numeric_features"],
        categorical_features=state["categorical_features"],
        seed=state["seed"],
        mmd_sample_size=state["mmd_sample_size"],
        mmd_permutations=state["mmd_permutations"],
        min_effect=state.get("min_effect", 0.0),  # detectors saved before the effect floor had none
        segments=[
            Segment(raw["name"], tuple(Condition(**c) for c in raw["where"])) for raw in state.get("segments", [])
        ],
        min_segment_excess=state.get("min_segment_excess", 0.0),
        segment_signals=state.get("segment_signals", 1),
    )
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


def _resolve(segment: Segment, reference: pd.DataFrame) -> Segment:
    """``segment`` with each ``reference_quantile`` bound turned into the reference's value."""
    where = []
    for c in segment.where:
        if c.reference_quantile is not None:
            values = reference[c.feature].to_numpy(dtype=np.float64, na_value=np.nan)
            c = Condition(c.feature, c.op, float(np.nanquantile(values, c.reference_quantile)), c.reference_quantile)
        where.append(c)
    return Segment(segment.name, tuple(where))


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


# ---------------------------------------------------------------------------------------------------------
# Realized performance


def realized_performance(y_true, score, threshold: float) -> dict[str, Any]:
    """Metrics of a labelled day, from :func:`loopline.training.evaluate.evaluate` (score >= threshold flags).

    Returns ``roc_auc``, ``pr_auc``, ``precision_at_threshold``, ``recall_at_threshold``, ``brier``,
    ``flagged_rate`` (None where undefined), ``rows``, ``positives``, ``flagged``, ``threshold`` and
    ``auc_unavailable_reason`` (None when both AUCs are defined). A day with a single class has no AUCs.
    """
    from loopline.training.evaluate import evaluate

    y = np.asarray(y_true).astype(int)
    p = np.asarray(score, dtype=np.float64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    rows, positives = len(y), int(y.sum())
    out: dict[str, Any] = {
        "rows": rows,
        "positives": positives,
        "flagged": int((p >= threshold).sum()),
        "threshold": float(threshold),
        "roc_auc": None,
        "pr_auc": None,
        "precision_at_threshold": None,
        "recall_at_threshold": None,
        "brier": None,
        "flagged_rate": None,
        "auc_unavailable_reason": None,
    }
    if rows == 0:
        out["auc_unavailable_reason"] = "no labelled rows"
        return out
    metrics = evaluate(y, p, threshold)
    for key in ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold", "brier", "flagged_rate"):
        out[key] = None if math.isnan(metrics[key]) else metrics[key]
    if positives in (0, rows):
        kind = "legitimate" if positives == 0 else "fraud"
        out["roc_auc"] = out["pr_auc"] = None
        out["auc_unavailable_reason"] = f"single class: all {rows} labelled rows are {kind}"
    return out


def performance_drop(current: Mapping[str, Any] | float | None, reference_auc: float | None, tolerance: float) -> bool:
    """Whether the realized ROC AUC fell at least ``tolerance`` (absolute) below ``reference_auc``.

    ``current`` is :func:`realized_performance`'s dict or a ROC AUC; an unknown AUC on either side is no drop.
    """
    auc = current.get("roc_auc") if isinstance(current, Mapping) else current
    if auc is None or reference_auc is None or math.isnan(auc) or math.isnan(reference_auc):
        return False
    drop = reference_auc - auc
    return drop > tolerance or math.isclose(drop, tolerance, rel_tol=0, abs_tol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Retraining decision


COVARIATE, PATTERN, BOTH = "covariate", "pattern", "both"


@dataclass(frozen=True)
class Decision:
    """Whether to trigger training now, and why (also why not, when a reason was suppressed).

    ``kind`` is the drift seen (:func:`drift_kind`); ``schedule`` says a retraining is wanted once the night's
    labels have matured (a pattern the model cannot learn from today's unlabelled rows); ``due`` names the
    scheduled retrainings (their drift nights) this trigger fires.
    """

    trigger: bool
    reason: str
    drifted_features: list[str] = field(default_factory=list)
    kind: str | None = None
    schedule: bool = False
    due: list[str] = field(default_factory=list)


def drift_kind(result: DriftResult | None, performance_drop: bool) -> str | None:
    """Which drift a night shows: ``covariate`` (the inputs' distributions moved: enough feature, multivariate
    or score signals on their own), ``pattern`` (a traffic segment grew, or the realized performance fell: a
    new way of fraud the model needs labels to learn), ``both``, or None.

    A covariate shift is learnt from the new rows themselves (their features are known tonight); a pattern is
    learnt only from its labels, which mature ``features.label_maturity_days`` later.
    """
    covariate = False
    pattern = bool(performance_drop)
    if result is not None and result.drift:
        own = len(result.drifted_features) + bool(result.multivariate_drifted) + bool(result.score_drifted)
        covariate = own >= result.min_drifted_features
        pattern = pattern or bool(result.drifted_segments)
        if not covariate and not pattern:
            covariate = True  # drift from signals of both kinds together: retrain now, as before
    if covariate and pattern:
        return BOTH
    return COVARIATE if covariate else PATTERN if pattern else None


def retrain_decision(
    result: DriftResult | None,
    performance_drop: bool,
    last_trigger_at: dt.datetime | None,
    now: dt.datetime,
    cooldown_hours: float,
    training_active: bool,
    *,
    defer_pattern: bool = False,
    due: Sequence[str] = (),
    maturity_note: str = "",
) -> Decision:
    """Pure decision: trigger on data drift (``result.drift``) or a realized performance drop, unless a training
    run is already running or queued, or the last trigger is less than ``cooldown_hours`` before ``now``.

    With ``defer_pattern`` a pattern drift (:func:`drift_kind`) does not trigger now: the decision asks for a
    retraining once the labels matured (``schedule``; ``maturity_note`` says when), and a covariate shift of the
    same night still triggers now. ``due`` lists scheduled retrainings whose time has come: they trigger too.

    Datetimes must both be timezone-aware (or both naive). A trigger time in the future counts as inside the
    cooldown.
    """
    drifted = []
    if result is not None:
        drifted = [*result.drifted_features, *(f"segment:{name}" for name in result.drifted_segments)]
    kind = drift_kind(result, performance_drop)
    # A grown segment is learnt from labels that mature later; a performance drop is measured on a day whose
    # labels have just matured, so it is learnt now.
    schedule = bool(defer_pattern and result is not None and result.drift and result.drifted_segments)
    covariate_now = result is not None and result.drift and (not schedule or kind == BOTH)
    reasons = []
    if covariate_now:
        reasons.append(f"data drift ({result.summary()})")
    if performance_drop:
        reasons.append("realized performance dropped")
    if due:
        reasons.append(f"scheduled retraining due (pattern drift of {', '.join(due)}: its labels have matured)")
    later = ""
    if schedule:
        grown = ", ".join(result.drifted_segments)
        later = f"pattern drift (segment(s) grown: {grown}): retraining scheduled {maturity_note}".rstrip()
    if not reasons:
        if schedule:
            return Decision(False, f"no trigger now: {later}", drifted, kind, schedule)
        why = result.summary() if result is not None else "no drift result"
        return Decision(False, f"no trigger: {why}; no performance drop", drifted, kind)
    wanted = " and ".join(reasons) + (f"; {later}" if later else "")
    suppressed = []
    if training_active:
        suppressed.append("a training run is already running or queued")
    if last_trigger_at is not None and cooldown_hours > 0:
        if (last_trigger_at.tzinfo is None) != (now.tzinfo is None):
            raise ValueError("last_trigger_at and now must both be timezone-aware or both naive")
        until = last_trigger_at + dt.timedelta(hours=cooldown_hours)
        if now < until:
            suppressed.append(
                f"cooldown: last trigger at {last_trigger_at.isoformat()}, "
                f"no new trigger before {until.isoformat()} ({cooldown_hours:g} h)"
            )
    if suppressed:
        reason = f"suppressed ({'; '.join(suppressed)}); would trigger for {wanted}"
        return Decision(False, reason, drifted, kind, schedule)
    return Decision(True, wanted, drifted, kind, schedule, list(due))
