"""Segments: named slices of traffic whose share of a night is tested (see "Segments" in :mod:`loopline.drift`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["Condition", "Op", "Segment", "resolve"]

Op = Literal["<", "<=", ">", ">=", "==", "!="]
_OPS: dict[str, Any] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
}  # fmt: skip


@dataclass(frozen=True)
class Condition:
    """``feature op value``; ``reference_quantile`` sets ``value`` from the reference when the detector is fitted."""

    feature: str
    op: Op
    value: float | None = None
    reference_quantile: float | None = None


@dataclass(frozen=True)
class Segment:
    """A named slice of traffic: the rows where every condition holds (see "Segments" in :mod:`loopline.drift`)."""

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


def resolve(segment: Segment, reference: pd.DataFrame) -> Segment:
    """``segment`` with each ``reference_quantile`` bound turned into the reference's value."""
    where = []
    for c in segment.where:
        if c.reference_quantile is not None:
            values = reference[c.feature].to_numpy(dtype=np.float64, na_value=np.nan)
            c = Condition(c.feature, c.op, float(np.nanquantile(values, c.reference_quantile)), c.reference_quantile)
        where.append(c)
    return Segment(segment.name, tuple(where))
