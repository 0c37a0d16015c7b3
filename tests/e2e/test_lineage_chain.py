"""OpenLineage end to end: one day through feature_pipeline, train_model and batch_score (`dag.test()`) with the
provider's file transport, then the chain landing → raw → features → model version → scores read back from the
emitted events alone; and a broken transport never fails a task.

The day's landing drop goes through the real pipeline; the model is trained on a synthetic history in the same
lake (days after the drop's day: label maturity needs weeks of history, which one day cannot give).
"""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from loopline import lake as tables
from loopline import lineage
from loopline.config import get_config
from loopline.synth import generate
from loopline.training.synthetic import write_synthetic_lake
from tests.conftest import REPO, dag_environment, environment, load_dag, run_day
from tests.lineage_support import file_transport, openlineage_conf_reset

pytestmark = pytest.mark.e2e

DAY = dt.date(2026, 1, 1)  # the drop that goes through feature_pipeline, then batch_score
HISTORY = dt.date(2026, 1, 2)  # synthetic features and labels from here on: the training window
CUTOFF = dt.date(2026, 2, 7)
NAME = "loopline-lineage-e2e"
SCHEMA = "lineage_e2e"


@pytest.fixture(scope="module")
def loop(spark_connect_url, airflow_db, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    events = root / "lineage" / "events.jsonl"
    events.parent.mkdir()
    overrides = {
        **dag_environment(root, SCHEMA, NAME, sensor_timeout=6),
        **file_transport(events),  # what `loopline up` sets (stack.lineage_environment)
        "LOOPLINE__STORAGE__LANDING_URI": str(root / "landing"),
        "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": "10",
        "LOOPLINE__TRAINING__WINDOW_DAYS": "25",
        "LOOPLINE__TRAINING__HOLDOUT_DAYS": "5",
        "LOOPLINE__TRAINING__VALIDATION_DAYS": "4",
        "LOOPLINE__GATE__ABSOLUTE_FLOOR": "0.6",
        "LOOPLINE__SCORING__THRESHOLD": "0.1",
        "LOOPLINE__SCORING__SHADOW": "false",
    }
    with environment(overrides):  # MLflow's tracking URI the tasks set goes back with the module (conftest)
        openlineage_conf_reset()
        postgres.migrate(SCHEMA)
        generate(DAY, 1, root / "landing", transactions_per_day=600, seed=5)
        write_synthetic_lake(root / "lake", HISTORY, 36, rows_per_day=600, seed=3)
        yield {"root": root, "events": events, "postgres": postgres}
    openlineage_conf_reset()


def test_one_day_chain_from_the_landing_drop_to_the_scores(loop):
    from mlflow import MlflowClient

    dagrun, states = run_day(load_dag("feature_pipeline"), DAY)
    assert dagrun.state == "success", states
    trained = load_dag("train_model").test(
        logical_date=dt.datetime.combine(CUTOFF, dt.time(), tzinfo=dt.UTC),
        run_conf={"reason": "lineage", "max_rounds": 40, "cutoff": str(CUTOFF)},
    )
    assert trained.state == "success", {ti.task_id: ti.state for ti in trained.get_task_instances()}
    dagrun, states = run_day(load_dag("batch_score"), DAY)
    assert dagrun.state == "success", states

    graph = lineage.LineageGraph.from_events(lineage.read_events(loop["events"]))
    ns = "loopline"
    scores = lineage.lake(ns, tables.SCORES, DAY).key
    analyst = lineage.analyst(ns, "transaction_scores", DAY).key
    features = lineage.lake(ns, tables.FEATURES, DAY).key
    raw = lineage.lake(ns, tables.RAW_TRANSACTIONS, DAY).key
    landing = lineage.landing(ns, "transactions", DAY).key
    model = lineage.model_version(ns, NAME, 1).key

    # The chain, from the events alone: landing → raw → features → scores, and the model version that scored.
    assert landing in graph.producers[raw]  # ingest_drop
    assert raw in graph.producers[features]  # build_features
    assert {features, model} <= graph.producers[scores]  # score_champion
    assert scores in graph.producers[analyst]  # load_scores
    assert graph.path(landing, analyst) is not None
    assert {landing, raw, features, model} <= graph.upstream(scores)
    assert graph.jobs[features] == {"feature_pipeline.build_features", "feature_pipeline.publish_features"}
    assert graph.jobs[scores] == {"batch_score.score_champion"}
    assert graph.jobs[model] == {"train_model.gate_candidate"}
    # The features' dataset is the Asset's day, and it carries the lake version that was published.
    from loopline.orchestration.feature_tasks import FEATURES_ASSET

    assert features[1] == f"{FEATURES_ASSET.name}/ds={DAY}"
    from loopline.config import resolve_uri
    from loopline.lake import Lake

    lake = Lake(resolve_uri(get_config().storage.lake_uri))
    assert graph.versions[features] == {lake.current_version(tables.FEATURES, DAY)}

    # The model version leads back to the exact partitions it was trained on: in the lineage events and in
    # MLflow's logged inputs of its run, the same names and versions.
    trained_on = {key for key in graph.upstream(model) if key[1].startswith(f"{lineage.FEATURES_ASSET}/")}
    assert len(trained_on) >= 10  # the training split's days (validation and holdout days too)
    client = MlflowClient(get_config().resolve(get_config().mlflow.tracking_uri))
    run = client.get_run(client.get_model_version(NAME, "1").run_id)
    logged = {
        (d.dataset.name, d.dataset.digest)
        for d in run.inputs.dataset_inputs
        if d.dataset.name.startswith("loopline_features/")
    }
    assert {name for name, _ in logged} == {name for _, name in trained_on}
    for name, digest in logged:
        assert graph.versions[(ns, name)] == {digest}
        ds = name.split("ds=")[1]
        assert lake.current_version(tables.FEATURES, dt.date.fromisoformat(ds)) == digest


def test_a_broken_transport_never_fails_a_task(loop):
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

    folder = loop["root"] / "not-a-file"
    folder.mkdir()
    os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(folder), "append": True}  # a folder: every write fails
    )
    openlineage_conf_reset()
    try:
        before = loop["events"].stat().st_size
        dagrun, states = run_day(load_dag("batch_score"), DAY)
        assert dagrun.state == "success", states
        assert loop["events"].stat().st_size == before  # nothing went to the working file: the transport was used
        assert get_openlineage_listener().adapter._client is not None
    finally:
        os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
            {"type": "file", "log_file_path": str(loop["events"]), "append": True}
        )
        openlineage_conf_reset()


def test_an_error_inside_the_lineage_call_never_fails_a_task(loop):
    import airflow.providers.openlineage.api as api

    from loopline.orchestration import lineage as reporting

    original = api.emit_dataset_lineage

    def broken(**kwargs):
        raise RuntimeError("lineage backend exploded")

    api.emit_dataset_lineage = broken
    failures = reporting.FAILURES["count"]
    try:
        dagrun, states = run_day(load_dag("batch_score"), DAY)
    finally:
        api.emit_dataset_lineage = original
    assert dagrun.state == "success", states
    assert reporting.FAILURES["count"] >= failures + 2  # score_champion and load_scores each tried and went on


def _compose_transport(url: str) -> str:
    """``AIRFLOW__OPENLINEAGE__TRANSPORT`` as docker-compose.yaml sets it, with ``OPENLINEAGE_URL`` = ``url``."""
    import re

    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text(encoding="utf-8"))
    values = set()
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        if isinstance(environment, dict) and "AIRFLOW__OPENLINEAGE__TRANSPORT" in environment:
            values.add(environment["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    (value,) = values  # one setting, shared by every Airflow service
    return re.sub(r"\$\{OPENLINEAGE_URL(:\?[^}]*)?\}", url, value)


def test_the_http_transport_of_production_posts_the_task_datasets(loop):
    """The compose file's HTTP transport, pointed at a lineage server on loopback: a real task run posts its
    events there (the provider's HTTP transport, as in production), with Loopline's dataset names."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, dict]] = []

    class LineageServer(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), LineageServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = _compose_transport(url)
    openlineage_conf_reset()
    try:
        assert json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])["type"] == "http"
        before = loop["events"].stat().st_size
        dagrun, states = run_day(load_dag("batch_score"), DAY)
        assert dagrun.state == "success", states
    finally:
        server.shutdown()
        server.server_close()
        os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
            {"type": "file", "log_file_path": str(loop["events"]), "append": True}
        )
        openlineage_conf_reset()
    assert loop["events"].stat().st_size == before  # the file transport was not used
    assert {path for path, _ in received} == {"/api/v1/lineage"}
    events = [event for _, event in received]
    assert {e["job"]["namespace"] for e in events} == {"loopline"}
    graph = lineage.LineageGraph.from_events(events)
    ns = "loopline"
    features = lineage.lake(ns, tables.FEATURES, DAY).key
    scores = lineage.lake(ns, tables.SCORES, DAY).key
    analyst = lineage.analyst(ns, "transaction_scores", DAY).key
    assert scores[1] == f"loopline_scores/ds={DAY}"
    assert features in graph.producers[scores]
    assert scores in graph.producers[analyst]
    assert graph.jobs[scores] == {"batch_score.score_champion"}
    assert graph.jobs[analyst] == {"batch_score.load_scores"}
