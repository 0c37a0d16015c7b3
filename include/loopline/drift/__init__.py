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
(the effects measured on stable and drifted nights through the real pipeline are on the documentation's
Benchmarks page, drift detection). Every drifted feature is one
*signal*, and so are a drifted ``mmd`` and a drifted ``score_ks``; a grown segment counts
``segment_signals`` (``drift.segment_signals``, 2 by default: it names a fraud pattern, and its floor sits
several times above stable nights' growth, so it is enough alone). The day has
drifted when there are at least ``drift.min_drifted_features`` signals (default 2). So one feature alone,
which happens by chance on up to ``p_value`` of stable days, is not enough; one feature that also moves the
model's score distribution (or the joint distribution) is; and a shift of one underlying quantity that shows
in several features (amounts: ``amount_eur``, ``log_amount``, ``sum_*`` ...) is. The MMD test alone is not
trusted either: rows of a day are not independent draws (the same customers, bursts of one card), and on a
stable day of the generator it reached p < 0.05 with a sizeable share of the reference subsamples tried.

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
its p-value agrees up to permutation noise.

Persistence
-----------
:meth:`DriftDetector.save` writes a folder holding ``detector.json`` (settings, feature lists, the reference's
categories, standardization and kernel bandwidth) and ``reference.npz`` (the encoded reference arrays); no
pickle, so loading runs no code from the artifact and does not depend on the alibi-detect version.
:func:`load_detector` rebuilds the detector (building alibi's objects from the stored arrays takes
milliseconds); a folder saved by one backend loads into the other with ``backend=``.

Modules
-------
:mod:`~loopline.drift.settings` (a detector's settings, mapped from the config and the saved state),
:mod:`~loopline.drift.segments`, :mod:`~loopline.drift.stats` (corrections, scipy tests, numpy MMD),
:mod:`~loopline.drift.detectors` (the backends, build and load), :mod:`~loopline.drift.reports` (test rows and
results), :mod:`~loopline.drift.warmup`, :mod:`~loopline.drift.performance` and :mod:`~loopline.drift.decision`.
Their public names are importable from ``loopline.drift``.
"""

from loopline.drift.decision import BOTH, COVARIATE, PATTERN, Decision, drift_kind, retrain_decision
from loopline.drift.detectors import (
    AlibiDriftDetector,
    DriftDetector,
    ScipyDriftDetector,
    build_detector,
    load_detector,
)
from loopline.drift.performance import performance_drop, realized_performance
from loopline.drift.reports import DriftResult, DriftTest
from loopline.drift.segments import Condition, Segment
from loopline.drift.settings import (
    EXCLUDED_FEATURES,
    MMD_FEATURE,
    MMD_PERMUTATIONS,
    MMD_SAMPLE_SIZE,
    SCORE_COLUMN,
    DetectorSettings,
)
from loopline.drift.stats import correct
from loopline.drift.warmup import LABEL_FEATURES, LONG_WINDOW_FEATURES, feature_horizons, warming_features

__all__ = [
    "BOTH",
    "COVARIATE",
    "EXCLUDED_FEATURES",
    "LABEL_FEATURES",
    "LONG_WINDOW_FEATURES",
    "MMD_FEATURE",
    "MMD_PERMUTATIONS",
    "MMD_SAMPLE_SIZE",
    "PATTERN",
    "SCORE_COLUMN",
    "AlibiDriftDetector",
    "Condition",
    "Decision",
    "DetectorSettings",
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
