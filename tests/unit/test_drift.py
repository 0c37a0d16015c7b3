"""Drift detection (loopline.drift): real alibi-detect and scipy detectors on seeded synthetic feature days.

The alibi detectors here test MMD on 500 rows a side (the default is 1000) to keep the suite quick; the
statistic and the decision rule are the same.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest

from loopline.config import get_config, load_config
from loopline.drift import (
    EXCLUDED_FEATURES,
    MMD_FEATURE,
    AlibiDriftDetector,
    Condition,
    Decision,
    DriftDetector,
    DriftResult,
    DriftTest,
    ScipyDriftDetector,
    Segment,
    build_detector,
    correct,
    feature_horizons,
    load_detector,
    performance_drop,
    realized_performance,
    retrain_decision,
    warming_features,
)
from loopline.reference import static_rates
from loopline.schemas import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from loopline.training.synthetic import CATEGORIES, synthetic_day

REFERENCE_DAY = dt.date(2026, 3, 2)
CURRENT_DAY = dt.date(2026, 3, 3)
ROWS = 5000
SEED = 11
TEST_MMD_ROWS = 500
BACKENDS = (AlibiDriftDetector, ScipyDriftDetector)
TESTED = [*(f for f in NUMERIC_FEATURES if f not in EXCLUDED_FEATURES), *CATEGORICAL_FEATURES]
HOME = ("DE", "FR", "NL", "ES", "IT")


def _day(day: dt.date) -> pd.DataFrame:
    frame, probability = synthetic_day(day, ROWS, SEED)
    frame["score"] = probability  # the true probability stands in for a model's score
    return frame


def _numeric_shift(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["amount_eur"] = out["amount_eur"] * 3
    out["hour_of_day"] = np.minimum(out["hour_of_day"] + 6, 23).astype("int32")
    return out


def _country_mix(frame: pd.DataFrame, *, consistent: bool = True) -> pd.DataFrame:
    """More foreign traffic; ``consistent`` also recomputes the country-derived features, as the feature job would."""
    rng = np.random.default_rng(5)
    out = frame.copy()
    out["country"] = rng.choice(CATEGORIES["country"], len(out), p=[0.3, 0.1, 0.1, 0.08, 0.08, 0.14, 0.12, 0.08])
    if consistent:
        foreign = ~out["country"].isin(HOME)
        out["is_foreign"] = foreign.astype("int32")
        out["is_new_country"] = (foreign & (rng.random(len(out)) < 0.5)).astype("int32")
    return out


CARD_TESTING = Segment(
    "card_testing",
    (Condition("amount_eur", "<=", 5.0), Condition("card_present", "==", 0.0), Condition("is_new_merchant", "==", 1.0)),
)
HIGH_SCORES = Segment("high_scores", (Condition("score", ">", reference_quantile=0.99),))


def _card_testing(frame: pd.DataFrame, share: float = 0.012) -> pd.DataFrame:
    """``share`` of the rows turned into card tests: small charges, card not present, at a merchant new to the card."""
    rng = np.random.default_rng(3)
    out = frame.copy()
    rows = rng.choice(len(out), int(share * len(out)), replace=False)
    amount = rng.uniform(0.5, 5.0, len(rows))
    out.loc[rows, "amount_eur"] = amount
    out.loc[rows, "log_amount"] = np.log1p(amount)
    out.loc[rows, "card_present"] = 0
    out.loc[rows, "is_new_merchant"] = 1
    return out


def _mild_shift(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["amount_eur"] = out["amount_eur"] * 1.04  # p-values near the corrected level, not far below it
    out["merchant_risk"] = out["merchant_risk"] * 1.03
    return out


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    reference = _day(REFERENCE_DAY)
    current = _day(CURRENT_DAY)
    return {
        "reference": reference,
        "stable": current,
        "numeric": _numeric_shift(current),
        "categorical": _country_mix(current),
        "mild": _mild_shift(current),
    }


@pytest.fixture(scope="module")
def detectors(frames) -> dict[str, DriftDetector]:
    return {cls.backend: cls(mmd_sample_size=TEST_MMD_ROWS).fit(frames["reference"]) for cls in BACKENDS}


@pytest.fixture(scope="module")
def results(frames, detectors) -> dict[tuple[str, str], DriftResult]:
    """Each backend's result on each current frame, computed once."""
    cases = ("stable", "numeric", "categorical", "mild")
    return {(backend, case): detector.test(frames[case]) for backend, detector in detectors.items() for case in cases}


# ---------------------------------------------------------------------------------------------------------
# Detection


@pytest.mark.parametrize("backend", ["alibi", "scipy"])
def test_stable_day_has_no_drift(results, backend):
    result = results[backend, "stable"]
    assert result.backend == backend
    assert result.drifted_features == ()
    assert result.multivariate_drifted is False
    assert result.score_drifted is False
    assert result.signals == 0
    assert result.drift is False
    assert [row.feature for row in result.feature_tests] == TESTED
    assert "day_of_week" not in {row.feature for row in result.tests}
    assert [row.test for row in result.tests[-2:]] == ["mmd", "score_ks"]
    assert (result.reference_rows, result.current_rows) == (ROWS, ROWS)
    bonferroni = 0.05 / len(TESTED)
    assert all(row.threshold == pytest.approx(bonferroni) for row in result.feature_tests)
    assert all(row.p_value >= bonferroni for row in result.feature_tests)


@pytest.mark.parametrize("backend", ["alibi", "scipy"])
def test_numeric_shift_is_detected(results, backend):
    result = results[backend, "numeric"]
    assert {"amount_eur", "hour_of_day"} <= set(result.drifted_features)
    assert result.row("amount_eur").test == "ks"
    assert result.row("amount_eur").statistic > 0.3
    assert result.multivariate_drifted is True
    assert result.drift is True
    assert "drift:" in result.summary()
    assert "amount_eur" in result.summary()


@pytest.mark.parametrize("backend", ["alibi", "scipy"])
def test_country_mix_is_detected(results, backend):
    result = results[backend, "categorical"]
    assert {"country", "is_foreign"} <= set(result.drifted_features)
    assert result.row("country").test == "chi2"
    assert result.drift is True


def test_one_drifted_feature_is_one_signal(frames):
    """A change in one column alone (here: the country, nothing derived from it) needs a second signal."""
    current = _country_mix(frames["stable"], consistent=False)
    detector = ScipyDriftDetector(mmd_sample_size=0).fit(frames["reference"])
    result = detector.test(current)
    assert result.drifted_features == ("country",)
    assert result.multivariate_drifted is None  # turned off
    assert result.score_drifted is False
    assert (result.signals, result.drift) == (1, False)
    assert ScipyDriftDetector(mmd_sample_size=0, min_drifted_features=1).fit(frames["reference"]).test(current).drift


def _young_lake(frame: pd.DataFrame) -> pd.DataFrame:
    """What a lake a few weeks older does to the label-based rates: more evidence, rates spread from the prior."""
    out = frame.copy()
    for name in ("merchant_risk", "category_risk"):
        mean = out[name].mean()
        out[name] = mean + (out[name] - mean) * 3
    return out


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda cls: cls.backend)
def test_warming_features_are_reported_but_no_signal(frames, backend):
    detector = backend(mmd_sample_size=0).fit(frames["reference"])
    current = _young_lake(frames["stable"])
    counted = detector.test(current)
    assert {"merchant_risk", "category_risk"} <= set(counted.drifted_features)
    assert counted.drift is True  # counted, the lake's age alone looks like drift
    warming = ("merchant_risk", "category_risk", "merchant_label_count")
    result = detector.test(current, warming=warming)
    assert result.drifted_features == ()
    assert (result.signals, result.drift) == (counted.signals - 2, False)
    assert result.warming_features == ("merchant_risk", "category_risk", "merchant_label_count")
    row = result.row("merchant_risk")
    assert (row.drifted, row.counted) == (True, False)  # still tested and reported
    assert result.row("amount_eur").counted is True
    assert "not counted, windows still filling: merchant_risk, category_risk" in result.summary()
    # Real drift elsewhere still counts while the risk features warm up.
    shifted = detector.test(_numeric_shift(current), warming=warming)
    assert shifted.drift is True
    assert "amount_eur" in shifted.drifted_features
    assert "merchant_risk" not in shifted.drifted_features


def _tiny_shift_frames(rows: int = 20_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Many rows, a shift far too small to matter: significant by p-value, below a 0.05 effect floor."""
    rng = np.random.default_rng(4)
    reference = pd.DataFrame(
        {"amount_eur": rng.normal(0, 1, rows), "channel": rng.choice(["pos", "online", "atm"], rows, p=[0.5, 0.4, 0.1])}
    )
    current = pd.DataFrame(
        {
            "amount_eur": rng.normal(0.1, 1, rows),  # KS distance ~0.04
            "channel": rng.choice(["pos", "online", "atm"], rows, p=[0.47, 0.43, 0.1]),  # total variation 0.03
        }
    )
    return reference, current


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda cls: cls.backend)
def test_a_significant_but_tiny_shift_is_not_drift(backend):
    reference, current = _tiny_shift_frames()
    kwargs = {"numeric_features": ["amount_eur"], "categorical_features": ["channel"], "mmd_sample_size": 0}
    by_p_value = backend(**kwargs).fit(reference).test(current)
    assert by_p_value.drifted_features == ("amount_eur", "channel")  # p-values alone: both drifted
    floored = backend(**kwargs, min_effect=0.05).fit(reference).test(current)
    assert floored.drifted_features == ()
    amount, channel = floored.row("amount_eur"), floored.row("channel")
    assert amount.p_value < amount.threshold
    assert channel.p_value < channel.threshold
    assert 0.02 < amount.effect < 0.05
    assert amount.effect == pytest.approx(amount.statistic)  # the KS distance
    shares = lambda frame: frame["channel"].value_counts(normalize=True)  # noqa: E731
    tvd = 0.5 * shares(reference).subtract(shares(current), fill_value=0).abs().sum()
    assert channel.effect == pytest.approx(tvd)
    # A shift that matters passes the floor.
    moved = current.assign(amount_eur=current["amount_eur"] + 0.3)
    assert "amount_eur" in backend(**kwargs, min_effect=0.05).fit(reference).test(moved).drifted_features


def test_the_effect_floor_is_checked():
    with pytest.raises(ValueError, match="min_effect"):
        ScipyDriftDetector(min_effect=1.5)


def _segment_detector(backend: type[DriftDetector], reference: pd.DataFrame) -> DriftDetector:
    return backend(
        mmd_sample_size=0, min_effect=0.05, segments=[CARD_TESTING, HIGH_SCORES], min_segment_excess=0.005
    ).fit(reference)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_grown_segment_is_a_signal_where_no_distribution_moves(frames, backend):
    detector = _segment_detector(backend, frames["reference"])
    assert detector.test(frames["stable"]).drifted_segments == ()
    current = _card_testing(frames["stable"])
    result = detector.test(current)
    assert result.drifted_features == ()  # 1.2% of the rows: no KS distance reaches the floor
    assert result.drifted_segments == ("card_testing",)
    assert result.signals == 1
    assert "segment(s) grown: card_testing" in result.summary()
    row = result.row("card_testing")
    assert (row.test, row.drifted, row.counted) == ("segment", True, True)
    share = CARD_TESTING.mask(current).mean() - CARD_TESTING.mask(frames["reference"]).mean()
    assert row.effect == pytest.approx(share)
    assert row.effect > 0.009
    assert row.p_value < row.threshold == pytest.approx(0.05 / 2)  # Bonferroni over the two segments
    assert result.row("high_scores").drifted is False


def test_a_grown_segment_alone_triggers_with_two_signals(frames):
    detector = ScipyDriftDetector(mmd_sample_size=0, min_effect=0.05, segments=[CARD_TESTING], segment_signals=2)
    result = detector.fit(frames["reference"]).test(_card_testing(frames["stable"]))
    assert (result.signals, result.drift) == (2, True)
    now = dt.datetime(2026, 3, 4, tzinfo=dt.UTC)
    decision = retrain_decision(result, False, None, now, 72, False)
    assert decision.trigger is True
    assert decision.drifted_features == ["segment:card_testing"]
    assert "segment(s) grown: card_testing" in decision.reason


def test_segment_tests_agree_across_backends(frames):
    current = _card_testing(frames["stable"], share=0.004)  # a close call: p near the corrected level
    alibi = _segment_detector(AlibiDriftDetector, frames["reference"]).test(current)
    scipy = _segment_detector(ScipyDriftDetector, frames["reference"]).test(current)
    for name in ("card_testing", "high_scores"):
        a, s = alibi.row(name), scipy.row(name)
        assert a.p_value == pytest.approx(s.p_value, rel=1e-6)
        assert a.statistic == pytest.approx(s.statistic, rel=1e-6)
        assert (a.threshold, a.drifted, a.effect) == (s.threshold, s.drifted, s.effect)
    assert alibi.drifted_segments == scipy.drifted_segments


def test_a_shrinking_segment_is_not_drift(frames):
    detector = _segment_detector(ScipyDriftDetector, _card_testing(frames["reference"], share=0.02))
    row = detector.test(frames["stable"]).row("card_testing")
    assert row.p_value < row.threshold  # significant, but the share fell
    assert row.effect < 0
    assert row.drifted is False


def test_segment_bounds_are_fixed_from_the_reference_and_saved(tmp_path, frames):
    detector = _segment_detector(AlibiDriftDetector, frames["reference"])
    (bound,) = detector.settings.segments[1].where
    assert bound.value == pytest.approx(np.quantile(frames["reference"]["score"], 0.99))
    assert detector.s_ref[:, 1].mean() == pytest.approx(0.01, abs=0.001)
    current = _card_testing(frames["stable"])
    loaded = load_detector(detector.save(tmp_path / "detector"), backend="scipy")
    assert loaded.settings.segments == detector.settings.segments
    assert loaded.settings.min_segment_excess == 0.005
    assert loaded.test(current).drifted_segments == ("card_testing",)
    # Without scores, the score segment cannot be fitted or tested; the others still are.
    unscored = ScipyDriftDetector(mmd_sample_size=0, segments=[CARD_TESTING, HIGH_SCORES])
    unscored.fit(frames["reference"].drop(columns="score"))
    assert [s.name for s in unscored.settings.segments] == ["card_testing"]
    assert [r.feature for r in detector.test(current.drop(columns="score")).tests if r.test == "segment"] == [
        "card_testing"
    ]


def test_segments_on_warming_features_are_no_signal(frames):
    detector = _segment_detector(ScipyDriftDetector, frames["reference"])
    current = _card_testing(frames["stable"])
    result = detector.test(current, warming=["is_new_merchant"])
    assert result.row("card_testing").drifted is True
    assert result.row("card_testing").counted is False
    assert result.drifted_segments == ()
    assert result.signals == 0
    # The score mixes every feature in: a score segment is no signal while any feature warms up.
    assert detector.test(current, warming=["cnt_30d"]).row("high_scores").counted is False
    assert detector.test(current, warming=["cnt_30d"]).row("card_testing").counted is True


def test_segments_are_checked():
    with pytest.raises(ValueError, match="not a numeric feature or 'score'"):
        ScipyDriftDetector(segments=[Segment("odd", (Condition("channel", "==", 1.0),))])
    with pytest.raises(ValueError, match="defined twice"):
        ScipyDriftDetector(segments=[CARD_TESTING, CARD_TESTING])
    with pytest.raises(ValueError, match="min_segment_excess"):
        ScipyDriftDetector(min_segment_excess=-0.1)


def test_multivariate_and_score_are_no_signal_while_features_warm_up(frames):
    """Both mix in the warming features (the MMD's columns, the model's inputs): on a young lake they moved with
    the label-based risk rates alone."""
    detector = ScipyDriftDetector(mmd_sample_size=TEST_MMD_ROWS).fit(frames["reference"])
    current = _young_lake(frames["stable"]).assign(score=frames["stable"]["score"] * 1.5)
    counted = detector.test(current)
    assert counted.score_drifted
    assert counted.multivariate_drifted
    result = detector.test(current, warming=("merchant_risk", "category_risk"))
    assert (result.score_drifted, result.multivariate_drifted) == (True, True)  # still measured and reported
    assert result.row("score").counted is False
    assert result.row(MMD_FEATURE).counted is False
    assert (result.signals, result.drift) == (0, False)
    assert "score" in result.summary()


def test_a_result_is_strict_json_for_xcom(results):
    """XCom serializes with allow_nan=False: MMD has no effect size, and a test may be uncomputable."""
    out = results["alibi", "numeric"].to_dict()
    mmd = next(row for row in out["tests"] if row["test"] == "mmd")
    assert mmd["effect"] is None
    json.dumps(out, allow_nan=False)


def test_warming_features_follow_the_lake_age():
    windows = {"1h": 1, "24h": 24, "7d": 168, "30d": 720}
    horizons = feature_horizons(windows, risk_window_days=90, label_maturity_days=20)
    assert horizons["merchant_risk"] == horizons["category_risk"] == 110
    assert horizons["cnt_30d"] == horizons["customer_history_days"] == 30
    assert horizons["amount_zscore_30d"] == horizons["is_new_merchant"] == 30
    assert horizons["cnt_7d"] == 7
    assert horizons["cnt_1h"] == horizons["sum_24h"] == 1
    assert "amount_eur" not in horizons
    start = dt.date(2026, 1, 1)
    young = warming_features(horizons, start, start + dt.timedelta(days=20))
    assert {"cnt_30d", "merchant_risk", "is_new_merchant"} <= set(young)
    assert "cnt_7d" not in young
    assert warming_features(horizons, start, start + dt.timedelta(days=40)) == (
        "merchant_risk",
        "category_risk",
        "merchant_label_count",
    )
    assert warming_features(horizons, start, start + dt.timedelta(days=110)) == ()


def test_unseen_categories_map_to_one_other_code(frames):
    current = frames["stable"].copy()
    rng = np.random.default_rng(3)
    new = rng.random(len(current)) < 0.05
    current.loc[new, "country"] = rng.choice(["ZZ", "QQ", "XX"], int(new.sum()))
    current.loc[current.index[:3], "channel"] = None
    detector = ScipyDriftDetector(mmd_sample_size=0).fit(frames["reference"])
    encoded = detector._encode(current, "current")
    country = encoded[:, TESTED.index("country")]
    assert set(np.unique(country[new])) == {len(CATEGORIES["country"])}  # one "other" code for all three
    assert encoded[:3, TESTED.index("channel")].tolist() == [len(CATEGORIES["channel"])] * 3
    assert "country" in detector.test(current).drifted_features


def test_frames_are_checked(frames):
    detector = ScipyDriftDetector()
    with pytest.raises(RuntimeError, match="fit the detector"):
        detector.test(frames["stable"])
    with pytest.raises(ValueError, match="lacks column"):
        detector.fit(frames["reference"].drop(columns=["country"]))
    detector.fit(frames["reference"])
    broken = frames["stable"].copy()
    broken["cnt_1h"] = broken["cnt_1h"].astype("float64")
    broken.loc[0, "cnt_1h"] = np.nan
    with pytest.raises(ValueError, match="nulls in numeric feature"):
        detector.test(broken)
    with pytest.raises(ValueError, match="empty"):
        detector.test(frames["stable"].head(0))
    no_score = detector.test(frames["stable"].drop(columns=["score"]))
    assert no_score.score_drifted is None
    assert "score" not in {row.feature for row in no_score.tests}


# ---------------------------------------------------------------------------------------------------------
# The two backends agree


def _compare(alibi: DriftResult, scipy: DriftResult) -> None:
    a, s = alibi.to_frame().set_index("feature"), scipy.to_frame().set_index("feature")
    univariate = [row.feature for row in alibi.feature_tests] + (["score"] if "score" in a.index else [])
    assert list(a.index) == list(s.index)
    assert a.loc[univariate, "drifted"].tolist() == s.loc[univariate, "drifted"].tolist()
    np.testing.assert_allclose(a.loc[univariate, "p_value"], s.loc[univariate, "p_value"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(a.loc[univariate, "statistic"], s.loc[univariate, "statistic"], rtol=1e-6)
    assert a.loc[univariate, "threshold"].tolist() == s.loc[univariate, "threshold"].tolist()
    assert alibi.drifted_features == scipy.drifted_features


@pytest.mark.parametrize("case", ["stable", "numeric", "categorical", "mild"])
def test_backends_make_identical_decisions(results, case):
    alibi, scipy = results["alibi", case], results["scipy", case]
    _compare(alibi, scipy)
    # MMD: the same statistic on the same samples; p-values from different permutation streams.
    mmd_a, mmd_s = alibi.row(MMD_FEATURE), scipy.row(MMD_FEATURE)
    assert mmd_a.statistic == pytest.approx(mmd_s.statistic, rel=1e-3, abs=1e-6)
    assert mmd_a.drifted == mmd_s.drifted
    assert alibi.drift == scipy.drift


def test_mild_shift_sits_near_the_corrected_level(results):
    """The mild case is there to compare decisions where they are close calls."""
    p = results["scipy", "mild"].row("amount_eur").p_value
    assert 1e-6 < p < 0.5


@pytest.mark.parametrize("case", ["stable", "numeric", "categorical", "mild"])
def test_backends_agree_with_fdr(frames, case):
    alibi = AlibiDriftDetector(correction="fdr", mmd_sample_size=0).fit(frames["reference"]).test(frames[case])
    scipy = ScipyDriftDetector(correction="fdr", mmd_sample_size=0).fit(frames["reference"]).test(frames[case])
    _compare(alibi, scipy)
    assert alibi.drift == scipy.drift


def test_corrections_match_alibi():
    from alibi_detect.utils.statstest import fdr

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 30))
        p = (rng.random(n) ** rng.uniform(1, 8)).astype(np.float32)  # some small, some not
        if trial % 10 == 0:
            p = np.full(n, 0.5, dtype=np.float32)  # nothing significant
        drifted, threshold = correct(p, 0.05, "fdr")
        any_drift, alibi_threshold = fdr(p, q_val=0.05)
        assert bool(drifted.any()) == bool(any_drift)
        if np.ndim(alibi_threshold):
            assert not drifted.any()
            assert threshold == pytest.approx(float(alibi_threshold[0]))
        else:
            assert threshold == float(alibi_threshold)
            assert drifted.tolist() == (p < alibi_threshold).tolist()
        drifted, threshold = correct(p, 0.05, "bonferroni")
        assert threshold == 0.05 / n
        assert drifted.tolist() == (p < 0.05 / n).tolist()
    with pytest.raises(ValueError, match="unknown correction"):
        correct(np.array([0.1], dtype=np.float32), 0.05, "holm")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Persistence and configuration


def test_save_load_round_trip(tmp_path, frames, detectors, results):
    for backend, detector in detectors.items():
        folder = detector.save(tmp_path / backend)
        assert sorted(p.name for p in folder.iterdir()) == ["detector.json", "reference.npz"]
        state = json.loads((folder / "detector.json").read_text())
        assert state["backend"] == backend
        assert state["categories"]["country"] == sorted(CATEGORIES["country"])
        loaded = load_detector(folder)
        assert type(loaded) is type(detector)
        assert loaded.settings == detector.settings  # every setting, segments with their fitted bounds, round-trips
        assert loaded.test(frames["numeric"]) == results[backend, "numeric"]
    # One artifact serves both backends: the alibi-built state loads into the permissive backend.
    crossed = ScipyDriftDetector.load(tmp_path / "alibi")
    assert isinstance(crossed, ScipyDriftDetector)
    assert crossed.test(frames["stable"]) == results["scipy", "stable"]
    assert isinstance(DriftDetector.load(tmp_path / "alibi"), AlibiDriftDetector)


def test_build_detector_follows_the_config(frames):
    base = load_config(environ={}).drift
    cfg = base.model_copy(update={"backend": "scipy", "reference_sample_size": 1000, "correction": "fdr"})
    detector = build_detector(cfg, frames["reference"])
    assert isinstance(detector, ScipyDriftDetector)
    assert (detector.settings.p_value, detector.settings.correction) == (cfg.p_value, "fdr")
    assert detector.settings.min_drifted_features == cfg.min_drifted_features
    assert detector.settings.min_effect == cfg.min_effect
    assert [s.name for s in detector.settings.segments] == [s.name for s in cfg.segments]
    assert detector.settings.min_segment_excess == cfg.min_segment_excess
    assert len(detector.x_ref) == 1000
    assert build_detector(cfg, frames["reference"]).x_ref.tolist() == detector.x_ref.tolist()  # seeded sample
    alibi = build_detector(base.model_copy(update={"backend": "alibi"}), frames["reference"].head(800))
    assert isinstance(alibi, AlibiDriftDetector)
    assert len(alibi.x_ref) == 800


def test_excluded_features_are_not_tested(frames):
    cfg = load_config(environ={}).drift.model_copy(
        update={"backend": "scipy", "exclude_features": ["country", "cnt_1h"]}
    )
    result = build_detector(cfg, frames["reference"]).test(frames["stable"])
    tested = {row.feature for row in result.feature_tests}
    assert "country" not in tested
    assert "cnt_1h" not in tested
    assert {"merchant_category", "amount_eur", "day_of_week"} <= tested  # only what the config names is left out
    with pytest.raises(ValueError, match="names no feature: cnt_2h"):
        build_detector(cfg.model_copy(update={"exclude_features": ["cnt_2h"]}), frames["reference"])


# ---------------------------------------------------------------------------------------------------------
# Realized performance


def test_realized_performance_matches_sklearn():
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    frame, probability = synthetic_day(CURRENT_DAY, 20_000, SEED)
    rng = np.random.default_rng(1)
    y = (rng.random(len(frame)) < probability).astype(int)
    score = np.clip(probability + rng.normal(0, 0.01, len(frame)), 0, 1)
    out = realized_performance(y, score, threshold=0.05)
    flagged = score >= 0.05
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y, score))
    assert out["pr_auc"] == pytest.approx(average_precision_score(y, score))
    assert out["precision_at_threshold"] == pytest.approx(precision_score(y, flagged))
    assert out["recall_at_threshold"] == pytest.approx(recall_score(y, flagged))
    assert (out["rows"], out["positives"], out["flagged"]) == (len(y), int(y.sum()), int(flagged.sum()))
    assert out["auc_unavailable_reason"] is None
    assert 0 < out["positives"] < out["rows"]
    json.dumps(out)  # plain values only


def test_realized_performance_on_a_single_class_day():
    legit = realized_performance(np.zeros(50), np.linspace(0, 0.5, 50), threshold=0.2)
    assert legit["roc_auc"] is None
    assert legit["pr_auc"] is None
    assert legit["recall_at_threshold"] is None
    assert legit["auc_unavailable_reason"] == "single class: all 50 labelled rows are legitimate"
    assert legit["precision_at_threshold"] == 0.0
    fraud = realized_performance(np.ones(5), np.full(5, 0.9), threshold=0.2)
    assert (fraud["roc_auc"], fraud["pr_auc"], fraud["recall_at_threshold"]) == (None, None, 1.0)
    assert "are fraud" in fraud["auc_unavailable_reason"]
    empty = realized_performance([], [], threshold=0.2)
    assert (empty["rows"], empty["roc_auc"], empty["auc_unavailable_reason"]) == (0, None, "no labelled rows")
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        realized_performance([0, 1, 0], [0.1, 0.2], threshold=0.2)


def test_performance_drop():
    assert performance_drop({"roc_auc": 0.80}, 0.90, 0.05) is True
    assert performance_drop({"roc_auc": 0.85}, 0.90, 0.05) is True  # exactly the tolerance counts
    assert performance_drop({"roc_auc": 0.86}, 0.90, 0.05) is False
    assert performance_drop(0.95, 0.90, 0.05) is False
    assert performance_drop({"roc_auc": None}, 0.90, 0.05) is False  # single-class day: unknown
    assert performance_drop(0.5, None, 0.05) is False
    assert performance_drop(math.nan, 0.9, 0.05) is False


# ---------------------------------------------------------------------------------------------------------
# Retraining decision


def _result(drifted: tuple[str, ...], *, score: bool = False) -> DriftResult:
    tests = tuple(DriftTest(name, "ks", 0.5, 0.0 if name in drifted else 0.5, 0.01, name in drifted) for name in TESTED)
    signals = len(drifted) + score
    return DriftResult(
        backend="scipy",
        tests=tests,
        drifted_features=drifted,
        multivariate_drifted=None,
        score_drifted=score,
        signals=signals,
        min_drifted_features=2,
        drift=signals >= 2,
        reference_rows=5000,
        current_rows=5000,
        p_value=0.05,
        correction="bonferroni",
    )


NOW = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)


def test_retrain_decision_triggers_on_drift_or_performance():
    drift = _result(("amount_eur", "log_amount"))
    decision = retrain_decision(drift, False, None, NOW, 72, training_active=False)
    assert decision == Decision(True, decision.reason, ["amount_eur", "log_amount"], kind="covariate")
    assert decision.reason.startswith("data drift")
    assert "amount_eur, log_amount" in decision.reason
    quiet = _result(("country",))
    decision = retrain_decision(quiet, False, None, NOW, 72, training_active=False)
    assert decision.trigger is False
    assert decision.reason.startswith("no trigger")
    assert decision.drifted_features == ["country"]
    decision = retrain_decision(quiet, True, None, NOW, 72, training_active=False)
    assert (decision.trigger, decision.reason) == (True, "realized performance dropped")
    both = retrain_decision(drift, True, None, NOW, 72, training_active=False)
    assert both.trigger
    assert "and realized performance dropped" in both.reason
    assert retrain_decision(None, True, None, NOW, 72, training_active=False).trigger


def test_retrain_decision_honours_the_cooldown():
    drift = _result(("amount_eur", "log_amount"))
    recent = NOW - dt.timedelta(hours=71)
    decision = retrain_decision(drift, True, recent, NOW, 72, training_active=False)
    assert decision.trigger is False
    assert "cooldown" in decision.reason
    assert "2026-03-10T07:00:00+00:00" in decision.reason  # when the cooldown ends
    assert "would trigger for data drift" in decision.reason
    assert decision.drifted_features == ["amount_eur", "log_amount"]
    assert retrain_decision(drift, False, NOW - dt.timedelta(hours=72), NOW, 72, training_active=False).trigger
    assert retrain_decision(drift, False, recent, NOW, 0, training_active=False).trigger  # no cooldown
    assert not retrain_decision(drift, False, NOW + dt.timedelta(hours=1), NOW, 72, training_active=False).trigger
    with pytest.raises(ValueError, match="timezone-aware"):
        retrain_decision(drift, False, recent.replace(tzinfo=None), NOW, 72, training_active=False)


def test_a_due_retraining_is_held_only_by_the_cooldown_of_the_last_due_one():
    quiet = _result(())
    immediate = NOW - dt.timedelta(hours=48)  # a covariate retraining, before the pattern's labels matured
    due = ["2026-03-04"]
    fired = retrain_decision(quiet, False, immediate, NOW, 72, training_active=False, due=due)
    assert fired.trigger
    assert fired.due == due
    assert "does not hold it" in fired.reason
    # A covariate drift tonight waits out the cooldown: the trigger is the due retraining's.
    drift = _result(("amount_eur", "log_amount"))
    both = retrain_decision(drift, False, immediate, NOW, 72, training_active=False, due=due)
    assert both.trigger
    assert both.reason.startswith("scheduled retraining due")
    # A retraining that already fired scheduled ones starts a cooldown that holds the next due ones.
    held = retrain_decision(
        quiet, False, immediate, NOW, 72, training_active=False, due=due, last_due_trigger_at=immediate
    )
    assert not held.trigger
    assert "cooldown" in held.reason
    # Held by the due one's cooldown (later than the immediate one's): the reason says until when.
    held = retrain_decision(
        quiet,
        False,
        immediate,
        NOW,
        72,
        training_active=False,
        due=due,
        last_due_trigger_at=NOW - dt.timedelta(hours=60),
    )
    assert not held.trigger
    assert "wait for the last one that fired such" in held.reason
    assert "no new trigger before 2026-03-10T18:00:00+00:00" in held.reason
    expired = NOW - dt.timedelta(hours=80)
    assert retrain_decision(
        quiet, False, immediate, NOW, 72, training_active=False, due=due, last_due_trigger_at=expired
    ).trigger
    # A running training still holds it.
    assert not retrain_decision(quiet, False, immediate, NOW, 72, training_active=True, due=due).trigger


def test_retrain_decision_waits_for_active_training():
    drift = _result(("amount_eur", "log_amount"))
    decision = retrain_decision(drift, False, None, NOW, 72, training_active=True)
    assert decision.trigger is False
    assert "already running or queued" in decision.reason
    both = retrain_decision(drift, False, NOW - dt.timedelta(hours=1), NOW, 72, training_active=True)
    assert "already running or queued" in both.reason
    assert "cooldown" in both.reason
    # Nothing to trigger: active training is not mentioned.
    assert "running" not in retrain_decision(_result(()), False, None, NOW, 72, training_active=True).reason


# ---------------------------------------------------------------------------------------------------------
# The generator's drift kinds


RAW_NUMERIC = ["amount_eur", "log_amount", "hour_of_day", "card_present"]


def _raw_features(landing, day: dt.date) -> pd.DataFrame:
    """The features computable from one transactions drop without Spark (no history, no labels)."""
    raw = pd.read_csv(landing / "transactions" / f"ds={day}" / "part-00000.csv", dtype={"card_present": str})
    amount = raw["amount"] * raw["currency"].map(static_rates(get_config().reference))
    return pd.DataFrame(
        {
            "amount_eur": amount,
            "log_amount": np.log1p(amount),
            "hour_of_day": pd.to_datetime(raw["event_time"], utc=True).dt.hour,
            "card_present": (raw["card_present"] == "true").astype(int),
            "channel": raw["channel"],
            "merchant_category": raw["merchant_category"],
            "country": raw["country"],
        }
    )


@pytest.mark.parametrize("kind", ["covariate", "new_pattern", "fraud_surge"])
def test_generator_drift_kinds(tmp_path, kind):
    from loopline.synth import generate

    start = dt.date(2026, 1, 5)
    landing = tmp_path / "landing"
    drift_day = start + dt.timedelta(days=3)
    generate(start, 4, landing, transactions_per_day=ROWS, seed=7, drift_start=drift_day, drift_kind=kind)
    reference = pd.concat([_raw_features(landing, start + dt.timedelta(days=i)) for i in range(2)])
    detector = ScipyDriftDetector(numeric_features=RAW_NUMERIC, categorical_features=CATEGORICAL_FEATURES)
    detector.fit(reference)
    before = detector.test(_raw_features(landing, start + dt.timedelta(days=2)))
    after = detector.test(_raw_features(landing, drift_day))
    assert before.drifted_features == ()
    assert before.drift is False
    assert "merchant_category" in after.drifted_features  # every kind tilts the merchant mix
    if kind == "covariate":
        assert {"amount_eur", "log_amount", "merchant_category"} <= set(after.drifted_features)
        assert after.drift is True
