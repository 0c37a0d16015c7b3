"""The Spark scoring job: same answers as in-process scoring, one pinned version, atomic partition."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from loopline import lake as tables
from loopline.config import load_config
from loopline.lake import Lake
from loopline.schemas import FEATURE_COLUMNS
from loopline.scoring import SCORE_COLUMNS, ModelRef, score_arrow_batch, score_batch
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
    assert written["reason_method"].fillna("").tolist() == expected["reason_method"].fillna("").tolist()
    for name in ("transaction_id", "customer_id", "merchant_id", "amount_eur"):
        assert written[name].tolist() == expected[name].tolist(), name
    # the same instants (the lake's Parquet timestamps read back without a zone; the session zone is UTC)
    assert pd.to_datetime(written["event_time"], utc=True).tolist() == expected["event_time"].tolist()
    assert result["flagged"] == int((expected["decision"] == "flag").sum()) > 0
    assert result["explained"] == result["flagged"]


@pytest.mark.parametrize(("explain", "method"), [("flagged", "exact"), ("all", "approx"), ("none", "exact")])
def test_arrow_batches_score_exactly_as_pandas_batches(setup, explain, method):
    """The job's Arrow path (mapInArrow) gives score_batch's values on every row and column."""
    _, model, _, lake = setup
    features = pd.read_parquet(lake.partition(tables.FEATURES, DS)).head(1500).reset_index(drop=True)
    features.loc[0, "channel"] = "never-seen"  # unseen category: missing for the model
    features.loc[1, "sum_1h"] = np.inf  # non-finite numerics: missing, and a null reason value
    features.loc[2, "sum_24h"] = np.nan
    batch = pa.RecordBatch.from_pandas(features[list(FEATURE_COLUMNS)], preserve_index=False)
    kwargs = {"threshold": 0.1, "explain": explain, "reason_codes": 3, "method": method}
    for rows in (batch, batch.slice(0, 0)):
        scored = score_arrow_batch(model, rows, **kwargs)
        assert scored.schema.names == list(SCORE_COLUMNS)
        types = ["string"] * 3 + ["timestamp[us, tz=UTC]", "double", "double"] + ["string"] * 3
        assert [str(t) for t in scored.schema.types] == types  # what SCORE_SCHEMA says, as Arrow types
        expected = score_batch(model, rows.to_pandas(), **kwargs)
        pd.testing.assert_frame_equal(scored.to_pandas(), expected, check_exact=True)
    explained = score_arrow_batch(model, batch, **kwargs).column("reasons").null_count < batch.num_rows
    assert explained == (explain != "none")


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
