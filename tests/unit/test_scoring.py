"""Scoring a batch: decisions at the threshold, reason codes where they are wanted, additive explanations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from loopline.scoring import FLAG, PASS, SCORE_COLUMNS, load_packaged, score_batch, top_reasons
from tests.models import fit, training_frame


@pytest.fixture(scope="module")
def xgb():
    return fit("xgboost")


@pytest.fixture(scope="module")
def batch():
    features, _ = training_frame(days=1, rows=3000, seed=4)
    return features


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


@pytest.mark.parametrize(("method", "name"), [("exact", "tree_shap"), ("approx", "saabas")])
def test_xgboost_contributions_add_up_to_the_calibrated_margin(xgb, batch, method, name):
    explanation = xgb.explain(batch.head(500), method)
    margin = logit(xgb.predict_proba(batch.head(500)))
    assert explanation.method == name
    total = explanation.contributions.sum(axis=1).to_numpy() + explanation.base
    np.testing.assert_allclose(total, margin, atol=1e-4)


def test_flagged_rows_get_their_top_three_reasons(xgb, batch):
    threshold = float(np.quantile(xgb.predict_proba(batch), 0.97))
    scored = score_batch(xgb, batch, threshold=threshold, explain="flagged", reason_codes=3)
    assert list(scored.columns) == list(SCORE_COLUMNS)
    flagged = scored["decision"] == FLAG
    assert flagged.sum() > 0
    assert ((scored["score"] >= threshold) == flagged).all()
    assert scored.loc[~flagged, "reasons"].isna().all()
    assert (scored.loc[flagged, "reason_method"] == "tree_shap").all()
    # The reasons are the three largest positive contributions, in order, with the feature's own value.
    rows = np.flatnonzero(flagged.to_numpy())
    contributions = xgb.explain(batch.iloc[rows]).contributions
    for position, row in enumerate(rows[:20]):
        reasons = json.loads(scored.loc[row, "reasons"])
        expected = contributions.iloc[position].sort_values(ascending=False)
        expected = expected[expected > 0].head(3)
        assert [r["feature"] for r in reasons] == list(expected.index)
        np.testing.assert_allclose([r["contribution"] for r in reasons], expected.to_numpy(), atol=1e-6)
        for reason in reasons:
            value = batch.iloc[row][reason["feature"]]
            assert reason["value"] == (value.item() if hasattr(value, "item") else value)


def test_explain_policies(xgb, batch):
    small = batch.head(200)
    everything = score_batch(xgb, small, threshold=0.99, explain="all", reason_codes=2, method="approx")
    assert everything["reasons"].notna().all()
    assert (everything["reason_method"] == "saabas").all()
    assert all(len(json.loads(r)) <= 2 for r in everything["reasons"])
    nothing = score_batch(xgb, small, threshold=0.0001, explain="none")
    assert (nothing["decision"] == FLAG).all()
    assert nothing["reasons"].isna().all()
    assert (score_batch(xgb, small, threshold=0.9999, explain="flagged")["decision"] == PASS).all()
    with pytest.raises(ValueError, match=r"scoring\.explain"):
        score_batch(xgb, small, threshold=0.5, explain="some")


def test_empty_batch(xgb, batch):
    scored = score_batch(xgb, batch.head(0), threshold=0.5)
    assert list(scored.columns) == list(SCORE_COLUMNS)
    assert len(scored) == 0


def test_only_positive_contributions_are_reasons():
    contributions = pd.DataFrame({"a": [2.0, -1.0], "b": [0.5, -0.2], "c": [-3.0, -0.1]})
    features = pd.DataFrame({"a": [1, 2], "b": [float("nan"), 4.0], "c": ["x", "y"]})
    first, second = (json.loads(r) for r in top_reasons(contributions, features, 3))
    assert [r["feature"] for r in first] == ["a", "b"]
    assert first[1]["value"] is None  # NaN becomes JSON null, not an invalid NaN literal
    assert second == []


def test_mlp_reasons_say_they_come_from_occlusion():
    mlp = fit("mlp")
    features, _ = training_frame(days=1, rows=300, seed=5)
    scored = score_batch(mlp, features, threshold=0.0, explain="all", reason_codes=3)
    assert (scored["reason_method"] == "occlusion").all()


def test_packaged_model_loads_once_per_process(xgb, tmp_path, batch):
    import io
    import tarfile

    folder = xgb.save(tmp_path / "model")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    blob = buffer.getvalue()
    first = load_packaged(blob)
    assert load_packaged(blob) is first
    np.testing.assert_allclose(first.predict_proba(batch.head(100)), xgb.predict_proba(batch.head(100)))
