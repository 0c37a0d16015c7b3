"""A detector's settings: one typed record, mapped from the ``drift`` config and to and from a saved detector here
and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from loopline.drift.segments import Condition, Segment
from loopline.schemas import CATEGORICAL_FEATURES, NUMERIC_FEATURES

if TYPE_CHECKING:
    from loopline.config import DriftConfig

__all__ = [
    "EXCLUDED_FEATURES",
    "MMD_FEATURE",
    "MMD_PERMUTATIONS",
    "MMD_SAMPLE_SIZE",
    "SCORE_COLUMN",
    "Backend",
    "Correction",
    "DetectorSettings",
]

Backend = Literal["alibi", "scipy"]
Correction = Literal["bonferroni", "fdr"]

SCORE_COLUMN = "score"
# A day holds a single weekday: against a multi-day reference this feature would drift every day.
EXCLUDED_FEATURES: tuple[str, ...] = ("day_of_week",)
MMD_SAMPLE_SIZE = 1000  # rows a side for the MMD test (its kernel matrix is (2n)²: 2000² floats = 16 MB)
MMD_PERMUTATIONS = 100
MMD_FEATURE = "numeric_features"  # the ``feature`` of the mmd row

# Keys every saved detector holds; the others were added later and take their defaults when absent.
_REQUIRED_STATE = (
    "p_value",
    "correction",
    "min_drifted_features",
    "numeric_features",
    "categorical_features",
    "seed",
    "mmd_sample_size",
    "mmd_permutations",
)


@dataclass(frozen=True)
class DetectorSettings:
    """Everything a detector is built from besides its reference.

    Attributes:
        p_value: significance level of the feature family (corrected) and of the single tests.
        correction: ``bonferroni`` or ``fdr`` over the feature tests (and, separately, over the segments).
        min_drifted_features: signals needed for :attr:`DriftResult.drift`.
        numeric_features / categorical_features: the columns to test (default: the feature table's, less
            :data:`EXCLUDED_FEATURES`).
        seed: fixes the MMD subsamples and permutations.
        mmd_sample_size: rows a side for MMD (0 turns the multivariate test off).
        mmd_permutations: permutations of the MMD test.
        min_effect: smallest KS / total variation distance that counts as drift (0: the p-value alone).
        segments: slices of traffic whose share is tested (conditions on numeric features or ``score``).
        min_segment_excess: smallest growth of a segment's share (current less reference) that counts as drift.
        segment_signals: signals a grown segment counts for (``min_drifted_features``: one is enough).
    """

    p_value: float = 0.05
    correction: Correction = "bonferroni"
    min_drifted_features: int = 2
    numeric_features: tuple[str, ...] = tuple(f for f in NUMERIC_FEATURES if f not in EXCLUDED_FEATURES)
    categorical_features: tuple[str, ...] = tuple(f for f in CATEGORICAL_FEATURES if f not in EXCLUDED_FEATURES)
    seed: int = 0
    mmd_sample_size: int = MMD_SAMPLE_SIZE
    mmd_permutations: int = MMD_PERMUTATIONS
    min_effect: float = 0.0
    segments: tuple[Segment, ...] = ()
    min_segment_excess: float = 0.0
    segment_signals: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.p_value < 1:
            raise ValueError(f"p_value must lie in (0, 1), got {self.p_value}")
        if self.correction not in ("bonferroni", "fdr"):
            raise ValueError(f"unknown correction {self.correction!r}: bonferroni or fdr")
        if self.min_drifted_features < 1:
            raise ValueError(f"min_drifted_features must be at least 1, got {self.min_drifted_features}")
        if not 0 <= self.min_effect < 1:
            raise ValueError(f"min_effect must lie in [0, 1), got {self.min_effect}")
        if not 0 <= self.min_segment_excess < 1:
            raise ValueError(f"min_segment_excess must lie in [0, 1), got {self.min_segment_excess}")
        if self.segment_signals < 1:
            raise ValueError(f"segment_signals must be at least 1, got {self.segment_signals}")
        # Normalize what callers may pass as lists or ints (the record is frozen: set through object).
        normalized = {
            "p_value": float(self.p_value),
            "min_drifted_features": int(self.min_drifted_features),
            "numeric_features": tuple(self.numeric_features),
            "categorical_features": tuple(self.categorical_features),
            "seed": int(self.seed),
            "mmd_sample_size": int(self.mmd_sample_size),
            "mmd_permutations": int(self.mmd_permutations),
            "min_effect": float(self.min_effect),
            "segments": tuple(self.segments),
            "min_segment_excess": float(self.min_segment_excess),
            "segment_signals": int(self.segment_signals),
        }
        for name, value in normalized.items():
            object.__setattr__(self, name, value)
        if not self.numeric_features and not self.categorical_features:
            raise ValueError("no features to test")
        allowed = {*NUMERIC_FEATURES, *self.numeric_features, SCORE_COLUMN}  # excluded features may slice too
        names = [segment.name for segment in self.segments]
        for segment in self.segments:
            if names.count(segment.name) > 1:
                raise ValueError(f"segment {segment.name!r} is defined twice")
            if not segment.where:
                raise ValueError(f"segment {segment.name!r} has no condition")
            unknown = [f for f in segment.features if f not in allowed]
            if unknown:
                raise ValueError(
                    f"segment {segment.name!r}: {', '.join(unknown)} is not a numeric feature or {SCORE_COLUMN!r}"
                )

    @classmethod
    def from_config(cls, cfg_drift: DriftConfig, *, seed: int = 0) -> DetectorSettings:
        """The settings the ``drift`` config section asks for: every feature but ``drift.exclude_features``."""
        excluded = set(cfg_drift.exclude_features)
        unknown = sorted(excluded - set(NUMERIC_FEATURES) - set(CATEGORICAL_FEATURES))
        if unknown:
            raise ValueError(f"drift.exclude_features names no feature: {', '.join(unknown)}")
        return cls(
            p_value=cfg_drift.p_value,
            correction=cfg_drift.correction,
            min_drifted_features=cfg_drift.min_drifted_features,
            numeric_features=tuple(f for f in NUMERIC_FEATURES if f not in excluded),
            categorical_features=tuple(f for f in CATEGORICAL_FEATURES if f not in excluded),
            seed=seed,
            min_effect=cfg_drift.min_effect,
            segments=tuple(
                Segment(s.name, tuple(Condition(c.feature, c.op, c.value, c.reference_quantile) for c in s.where))
                for s in cfg_drift.segments
            ),
            min_segment_excess=cfg_drift.min_segment_excess,
            segment_signals=cfg_drift.segment_signals,
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-safe dict of every setting (the keys of a saved detector's ``detector.json``)."""
        state = asdict(self)
        state["numeric_features"] = list(self.numeric_features)
        state["categorical_features"] = list(self.categorical_features)
        state["segments"] = [{"name": s.name, "where": [asdict(c) for c in s.where]} for s in self.segments]
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DetectorSettings:
        """The settings of a saved detector (:meth:`to_state`); keys added after the first format default."""
        missing = [key for key in _REQUIRED_STATE if key not in state]
        if missing:
            raise ValueError(f"the saved drift detector lacks setting(s) {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in state.items() if key in known}
        values["segments"] = tuple(
            Segment(raw["name"], tuple(Condition(**c) for c in raw["where"])) for raw in state.get("segments", [])
        )
        return cls(**values)
