"""What a detector reports: one :class:`DriftTest` row per test and the night's :class:`DriftResult`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd

from loopline.drift.settings import Backend, Correction

__all__ = ["DriftResult", "DriftTest", "TestName"]

TestName = Literal["ks", "chi2", "mmd", "score_ks", "segment"]


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
    """What one current frame looks like against the reference (see "Decision rule" in :mod:`loopline.drift`)."""

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
