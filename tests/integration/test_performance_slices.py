"""The gate's slices over time: realized per-slice metrics of a scored day on its matured labels, in Postgres."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pytest

from loopline import lake as tables
from loopline import monitoring
from loopline.config import load_config
from loopline.lake import Lake
from loopline.training.synthetic import write_partition, write_synthetic_lake

pytestmark = pytest.mark.integration
START = dt.date(2026, 1, 1)


def test_a_matured_day_is_measured_per_slice_and_stored_for_analysts(tmp_path, postgres):
    write_synthetic_lake(tmp_path / "lake", START, 3, rows_per_day=3000, seed=2, labels_until=START + dt.timedelta(40))
    lake = Lake(str(tmp_path / "lake"))
    features = lake.arrow_dataset(lake.partition(tables.FEATURES, START)).to_table().to_pandas()
    rng = np.random.default_rng(0)
    scores = pd.DataFrame(
        {
            "transaction_id": features["transaction_id"],
            "score": rng.random(len(features)),
            "threshold": 0.9,
            "model_name": "m",
            "model_version": 3,
            "model_run_id": "r",
        }
    )
    write_partition(lake, tables.SCORES, START, scores)
    cfg = load_config().gate.slices
    asof = START + dt.timedelta(days=30)

    sliced = monitoring.realized_slices(str(tmp_path / "lake"), START, asof, cfg)
    assert sliced is not None
    assert sliced["threshold"] == 0.9
    assert set(sliced["slices"]) == {spec.name for spec in cfg.by}
    channel = sliced["slices"]["channel"]
    assert set(channel) <= {"pos", "online", "atm"}
    assert sum(int(g["rows"]) for g in channel.values()) > 0
    assert sliced["parity"]["attribute"] == cfg.fairness_attribute

    schema = f"perf_{uuid.uuid4().hex[:8]}"
    postgres.migrate(schema)
    conn = postgres.connect_loader()
    try:
        facts = {"ds": START, "model_name": "m", "model_version": 3, "evaluated_on": asof}
        written = monitoring.write_performance_slices(conn, schema, facts, sliced)
        assert written == monitoring.write_performance_slices(conn, schema, facts, sliced)  # a rerun replaces
    finally:
        conn.close()
    rows = postgres.query(
        f"SELECT slice, grp, rows, supported FROM {schema}.model_performance_slices WHERE ds = %s", START
    )
    assert len(rows) == written
    assert {r[0] for r in rows} == {spec.name for spec in cfg.by}
    # Analysts may read it.
    analyst = postgres.connect(postgres.roles.analyst)
    try:
        with analyst.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {schema}.model_performance_slices")
            assert cur.fetchone()[0] == written
            cur.execute(f"SELECT count(*) FROM {schema}.daily_alerts")
            assert cur.fetchone()[0] == 0
    finally:
        analyst.close()
