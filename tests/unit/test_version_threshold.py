"""A version's threshold travels in its JSON spec: saved, packaged for Spark, read back by scoring and the gate."""

from __future__ import annotations

import io
import tarfile

import numpy as np

from loopline.config import ThresholdPolicyConfig
from loopline.registry import model_threshold
from loopline.scoring import packaged_decision, score_batch, version_threshold
from loopline.thresholds import choose_threshold
from loopline.training.models import load_model
from tests.models import fit, training_frame


def _package(folder) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def test_the_recorded_threshold_is_what_scoring_and_the_gate_decide_with(tmp_path):
    model = fit("xgboost", seed=3, rounds=20)
    features, labels = training_frame(days=1, rows=3000, seed=8)
    proba = model.predict_proba(features)
    decision = choose_threshold(labels, proba, ThresholdPolicyConfig(alert_budget=0.03), fixed_threshold=0.2)
    model.decision = decision.as_dict()
    folder = model.save(tmp_path / "model")

    loaded = load_model(folder)
    assert loaded.threshold == decision.threshold
    assert model_threshold(loaded, 0.2) == decision.threshold
    blob = _package(folder)
    assert packaged_decision(blob)["policy"] == "alert_budget"
    threshold = version_threshold(packaged_decision(blob), 0.2)
    assert threshold == decision.threshold
    scored = score_batch(loaded, features, threshold=threshold, explain="none")
    assert np.mean(scored["decision"] == "flag") <= 0.03

    model.decision = None  # a model saved before policies: the configured threshold
    old = model.save(tmp_path / "old")
    assert load_model(old).threshold is None
    assert packaged_decision(_package(old)) is None
    assert version_threshold(None, 0.2) == 0.2
    assert model_threshold(load_model(old), 0.2) == 0.2
