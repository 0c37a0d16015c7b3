"""Both model types on CPU: they learn a separable problem, are deterministic, survive unseen categories,
round-trip through their saved folder, and the device choice fails clearly when CUDA is asked for but absent."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loopline.schemas import FEATURE_COLUMNS
from loopline.training.evaluate import expected_calibration_error
from loopline.training.models import (
    INPUT_COLUMNS,
    DeviceUnavailableError,
    TrainParams,
    load_model,
    resolve_device,
    torch_cuda_available,
    train_model,
)
from loopline.training.synthetic import synthetic_day

# Small and quick: the MLP needs small batches to take enough steps on 3000 rows.
PARAMS = TrainParams(
    seed=7, max_rounds=60, early_stopping_rounds=10, max_epochs=10, patience=3, batch_size=256, learning_rate=None
)
MLP_LEARNING_RATE = 5e-3


def _separable(day: dt.date, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Realistic feature columns; fraud = online at night, or an amount far above the customer's average."""
    frame, _ = synthetic_day(day, rows, seed)
    y = (((frame["channel"] == "online") & (frame["is_night"] == 1)) | (frame["amount_to_avg_30d"] > 2.5)).astype(int)
    return frame, y.to_numpy()


def _params(model_type: str) -> TrainParams:
    return PARAMS if model_type == "xgboost" else replace(PARAMS, learning_rate=MLP_LEARNING_RATE)


@pytest.fixture(scope="module")
def data():
    train, y_train = _separable(dt.date(2026, 1, 1), 3000, 1)
    val, y_val = _separable(dt.date(2026, 1, 2), 800, 1)
    test, y_test = _separable(dt.date(2026, 1, 3), 800, 1)
    return train, y_train, val, y_val, test, y_test


@pytest.fixture(scope="module", params=["xgboost", "mlp"])
def trained(request, data):
    train, y_train, val, y_val, _, _ = data
    return train_model(request.param, train, y_train, val, y_val, _params(request.param), device="cpu")


def test_learns_a_separable_problem(trained, data):
    *_, test, y_test = data
    proba = trained.predict_proba(test)
    assert proba.shape == (len(test),)
    assert np.all((proba >= 0) & (proba <= 1))
    assert roc_auc_score(y_test, proba) > 0.9, trained.model_type
    assert trained.fit_info.device == "cpu"
    assert trained.fit_info.iterations >= 1
    assert 0 <= trained.fit_info.best_iteration < trained.fit_info.iterations


def test_same_seed_same_predictions(trained, data):
    train, y_train, val, y_val, test, _ = data
    again = train_model(trained.model_type, train, y_train, val, y_val, _params(trained.model_type), device="cpu")
    np.testing.assert_array_equal(again.predict_proba(test), trained.predict_proba(test))


def test_unknown_categories_missing_values_and_extra_columns(trained, data):
    *_, test, _ = data
    odd = test.head(50).copy()
    odd.loc[odd.index[:10], "channel"] = "teleport"
    odd.loc[odd.index[10:20], "country"] = "ZZ"
    odd.loc[odd.index[20:25], "merchant_category"] = None
    odd.loc[odd.index[25:30], "amount_to_avg_30d"] = np.inf
    odd["something_else"] = "ignored"
    proba = trained.predict_proba(odd)
    assert proba.shape == (50,)
    assert np.all(np.isfinite(proba))
    # Only the model's input columns matter, in any order.
    shuffled = odd[list(reversed(list(INPUT_COLUMNS)))]
    np.testing.assert_allclose(trained.predict_proba(shuffled), proba)
    with pytest.raises(ValueError, match="lacks the model's feature column"):
        trained.predict_proba(odd.drop(columns=["amount_eur"]))


def test_save_and_load_round_trip(trained, data, tmp_path):
    *_, test, _ = data
    folder = trained.save(tmp_path / "model")
    loaded = load_model(folder)
    assert loaded.model_type == trained.model_type
    np.testing.assert_allclose(loaded.predict_proba(test), trained.predict_proba(test), rtol=1e-6)
    assert (folder / ("booster.json" if trained.model_type == "xgboost" else "mlp.pt")).exists()


def test_contributions_explain_the_log_odds(trained, data):
    *_, test, _ = data
    contributions = trained.contributions(test.head(20))
    assert list(contributions.columns) == list(INPUT_COLUMNS)
    assert contributions.shape == (20, len(INPUT_COLUMNS))
    assert np.isfinite(contributions.to_numpy()).all()
    if trained.model_type == "xgboost":
        importance = trained.feature_importance()
        assert max(importance, key=importance.get) in {"amount_to_avg_30d", "is_night", "channel", "amount_zscore_30d"}


def test_probabilities_are_prior_corrected(trained, data):
    """The positive-class weight w is undone exactly, p = q / (q + w (1 - q)), so ranking is unchanged."""
    _, y_train, *_, test, y_test = data
    assert trained.pos_weight == pytest.approx((len(y_train) - y_train.sum()) / y_train.sum())
    raw = trained._raw_proba(test)
    proba = trained.predict_proba(test)
    np.testing.assert_allclose(proba, raw / (raw + trained.pos_weight * (1 - raw)), rtol=1e-6)
    assert roc_auc_score(y_test, proba) == pytest.approx(roc_auc_score(y_test, raw))


def test_corrected_probabilities_track_the_base_rate_on_noisy_labels():
    """Labels drawn from known probabilities (~5% fraud): the weighted model's scores are inflated, the
    corrected ones are close to the true rate."""
    rng = np.random.default_rng(5)
    frames = [synthetic_day(dt.date(2026, 1, d), 3000, 2) for d in (1, 2, 3)]
    (train, p_train), (val, p_val), (test, p_test) = frames
    y_train, y_val, y_test = (rng.random(len(p)) < p for p in (p_train, p_val, p_test))
    model = train_model("xgboost", train, y_train, val, y_val, PARAMS, device="cpu")
    raw, proba = model._raw_proba(test), model.predict_proba(test)
    assert raw.mean() > 3 * y_test.mean()
    assert y_test.mean() / 2 < proba.mean() < y_test.mean() * 2
    assert expected_calibration_error(y_test, proba) < expected_calibration_error(y_test, raw) / 5


def test_feature_columns_frame_is_accepted(trained, data):
    *_, test, _ = data
    assert trained.predict_proba(test[list(FEATURE_COLUMNS)]).shape == (len(test),)


@pytest.mark.skipif(torch_cuda_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("model_type", ["xgboost", "mlp"])
def test_device_choice_without_a_gpu(model_type, data):
    assert resolve_device("auto", model_type) == "cpu"
    assert resolve_device("cpu", model_type) == "cpu"
    with pytest.raises(DeviceUnavailableError, match="--device cuda was requested but no CUDA GPU is visible"):
        resolve_device("cuda", model_type)
    train, y_train, val, y_val, _, _ = data
    with pytest.raises(DeviceUnavailableError):
        train_model(model_type, train.head(100), y_train[:100], val, y_val, PARAMS, device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu", model_type)


def test_a_model_trained_on_other_windows_is_refused_by_name(trained, tmp_path):
    """The columns a model was trained on travel in meta.json; another features.windows is a clear error at load."""
    import json

    folder = trained.save(tmp_path / "m")
    meta = json.loads((folder / "meta.json").read_text())
    meta["input_columns"] = [c.replace("_30d", "_90d") for c in meta["input_columns"]]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"does not match features\.windows") as refused:
        load_model(folder)
    assert "_90d" in str(refused.value)
    assert "_30d" in str(refused.value)
    assert "Retrain it" in str(refused.value)
