"""Lineage dataset names, the events read back into a graph, and the stack's transport settings."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from loopline import lineage
from loopline.config import get_config

DAY = dt.date(2026, 2, 20)


def test_names_identify_the_data_and_its_day():
    assert lineage.landing("ns", "transactions", DAY).name == "loopline_landing/transactions/ds=2026-02-20"
    assert lineage.lake("ns", "raw/transactions", "2026-02-20").name == "loopline_lake/raw/transactions/ds=2026-02-20"
    assert lineage.lake("ns", "features", DAY, "v1") == lineage.LineageDataset(
        "ns", "loopline_features/ds=2026-02-20", "v1"
    )
    assert lineage.lake("ns", "scores", DAY).name == "loopline_scores/ds=2026-02-20"
    assert lineage.analyst("ns", "drift_reports", DAY).name == "loopline_analyst/drift_reports/ds=2026-02-20"
    assert lineage.model_version("ns", "fraud", 3).name == "loopline_model/fraud/v3"
    with pytest.raises(ValueError, match="isoformat"):
        lineage.lake("ns", "features", "yesterday")


def test_the_assets_are_the_lineage_names_without_the_day():
    from loopline.orchestration.feature_tasks import FEATURES_ASSET
    from loopline.orchestration.scoring_tasks import SCORES_ASSET

    assert lineage.lake("x", "features", DAY).name.startswith(f"{FEATURES_ASSET.name}/ds=")
    assert lineage.lake("x", "scores", DAY).name.startswith(f"{SCORES_ASSET.name}/ds=")


def test_training_inputs_carry_each_partitions_version():
    found = lineage.training_inputs("ns", {"feature_partitions": {"2026-01-02": "b", "2026-01-01": "a"}})
    assert [(d.name, d.version) for d in found] == [
        ("loopline_features/ds=2026-01-01", "a"),
        ("loopline_features/ds=2026-01-02", "b"),
    ]


def _event(run: str, job: str, inputs: list, outputs: list) -> dict:
    def ds(item):
        name, version = item if isinstance(item, tuple) else (item, None)
        facets = {"version": {"datasetVersion": version}} if version else {}
        return {"namespace": "ns", "name": name, "facets": facets}

    return {
        "run": {"runId": run},
        "job": {"name": job},
        "inputs": [ds(i) for i in inputs],
        "outputs": [ds(o) for o in outputs],
    }


def test_the_graph_walks_from_scores_back_to_the_drop(tmp_path):
    events = [
        _event("1", "fp.ingest", ["landing/d"], [("raw/d", "r1")]),
        _event("2", "fp.features", ["raw/d"], [("features/d", "f1")]),
        _event("2", "fp.features", [], []),  # the provider's COMPLETE event of the same run: no datasets
        _event("3", "tm.gate", [("features/old", "f0")], ["model/v1"]),
        _event("4", "bs.score", ["features/d", "model/v1"], ["scores/d"]),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n{cut off mid-wri\n")
    graph = lineage.LineageGraph.from_events(lineage.read_events(path))
    key = lambda name: ("ns", name)  # noqa: E731
    assert graph.upstream(key("scores/d")) == {
        key(n) for n in ("features/d", "model/v1", "raw/d", "landing/d", "features/old")
    }
    assert graph.path(key("landing/d"), key("scores/d")) == [
        key(n) for n in ("landing/d", "raw/d", "features/d", "scores/d")
    ]
    assert graph.path(key("scores/d"), key("landing/d")) is None
    assert graph.jobs[key("features/d")] == {"fp.features"}
    assert graph.versions[key("features/old")] == {"f0"}


def test_the_stack_writes_events_to_a_file_and_a_configured_transport_wins(tmp_path, monkeypatch):
    from loopline import stack

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    get_config.cache_clear()
    try:
        env = stack.lineage_environment(get_config())
        transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
        assert transport == {
            "type": "file",
            "log_file_path": str(tmp_path / "lineage" / "events.jsonl"),
            "append": True,
        }
        assert (tmp_path / "lineage").is_dir()
        assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "loopline"
        monkeypatch.setenv("LOOPLINE__LINEAGE__ENABLED", "false")
        get_config.cache_clear()
        assert stack.lineage_environment(get_config()) == {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    finally:
        os.environ.pop("LOOPLINE__LINEAGE__ENABLED", None)
        get_config.cache_clear()


def test_report_outside_a_task_is_a_logged_no_op_never_an_error(caplog):
    from loopline.orchestration import lineage as reporting

    # No OpenLineage transport configured here: nothing is sent and nothing raises.
    assert reporting.report_lineage([lineage.landing("ns", "labels", DAY)], []) is False
    assert reporting.report_lineage([], []) is False
