"""The Spark scoring job: same answers as in-process scoring, one pinned version, atomic partition."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from loopline import lake as tables
from loopline.config import load_config
from loopline.lake import Lake
from loopline.scoring import ModelRef, score_batch
from loopline.training.synthetic import write_synthetic_lake
from spark_jobs import score
from tests.models import fit

pytestmark = pytest.mark.spark
DS = dt.date(2026, 1, 3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    write_synthetic_lake(root / "lake", dt.date(2026, 1, 1), 3, rows_per_day=4000, seed=2)
    cfg = load_config(
        environ={"LOOPLINE__STORAGE__LAKE_URI": str(root / "lake"), "LOOPLINE__SCORING__THRESHOLD": "0.1"}
    )
    model = fit("xgboost")
    folder = model.save(root / "model")
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    return cfg, model, buffer.getvalue(), Lake(str(root / "lake"))


def test_spark_scores_equal_in_process_scores(spark, setup):
    cfg, model, blob, lake = setup
    ref = ModelRef("fraud", 7, "run7", "champion")
    result = score.run(spark, DS, ref, blob, cfg)
    assert lake.partition(tables.SCORES, DS) == result["uri"]  # committed
    assert lake.stats(tables.SCORES, DS)["model"]["version"] == 7
    written = pd.read_parquet(result["uri"]).sort_values("transaction_id").reset_index(drop=True)
    features = pd.read_parquet(lake.partition(tables.FEATURES, DS)).sort_values("transaction_id")
    expected = score_batch(model, features.reset_index(drop=True), threshold=0.1, explain="flagged", reason_codes=3)

    assert len(written) == len(features) == result["rows"]
    assert (written["ds"] == DS).all()
    assert set(written["model_version"]) == {7}
    assert set(written["model_run_id"]) == {"run7"}
    np.testing.assert_allclose(written["score"], expected["score"], rtol=1e-12)
    assert (written["decision"] == expected["decision"]).all()
    assert written["reasons"].fillna("").tolist() == expected["reasons"].fillna("").tolist()
    assert result["flagged"] == int((expected["decision"] == "flag").sum()) > 0
    assert result["explained"] == result["flagged"]


def test_rerun_commits_a_new_version_of_the_same_rows(spark, setup):
    cfg, _, blob, lake = setup
    ref = ModelRef("fraud", 7, "run7", "champion")
    first = score.run(spark, DS, ref, blob, cfg)
    second = score.run(spark, DS, ref, blob, cfg)
    assert first["version"] != second["version"]
    assert lake.current_version(tables.SCORES, DS) == second["version"]
    assert first["rows"] == second["rows"]
    assert first["flagged"] == second["flagged"]


def test_a_day_without_published_features_fails_clearly(spark, setup):
    cfg, _, blob, lake = setup
    missing = DS + dt.timedelta(days=5)
    with pytest.raises(score.FeaturesMissing, match="run \\(or backfill\\) feature_pipeline"):
        score.run(spark, missing, ModelRef("fraud", 1, "r", "champion"), blob, cfg)
    assert lake.partition(tables.SCORES, missing) is None
