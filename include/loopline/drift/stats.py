"""Statistics shared by the backends: the corrections (as alibi-detect applies them), scipy's univariate tests on
encoded arrays and a numpy twin of alibi's MMD permutation test."""

from __future__ import annotations

import math

import numpy as np

from loopline.drift.settings import Correction

__all__ = ["correct", "median_bandwidth", "mmd_numpy", "squared_distances", "univariate_scipy"]


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


def univariate_scipy(x_ref: np.ndarray, x: np.ndarray, n_numeric: int) -> tuple[np.ndarray, np.ndarray]:
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


def median_bandwidth(z: np.ndarray) -> float:
    """alibi-detect's ``sigma_median`` on ``(z, z)``: sqrt(0.5 * median of the squared pairwise distances,
    counting past the zero diagonal)."""
    dist = squared_distances(z, z)
    n = z.shape[0]
    index = n + (dist.size - n) // 2 - 1
    return float(math.sqrt(0.5 * float(np.sort(dist, axis=None)[index])))


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x2 = np.sum(x * x, axis=1)[:, None]
    y2 = np.sum(y * y, axis=1)[None, :]
    return np.maximum(x2 + y2 - 2.0 * (x @ y.T), 1e-30)


def mmd_numpy(
    z_ref: np.ndarray, z: np.ndarray, sigma: float, permutations: int, seed: int
) -> tuple[float, float, float]:
    """alibi's ``MMDDriftTorch.score`` in numpy: (p-value, MMD², MMD² threshold at the 5% tail)."""
    joint = np.vstack([z_ref, z]).astype(np.float64)
    kernel = np.exp(-squared_distances(joint, joint) / (2.0 * sigma**2))
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
