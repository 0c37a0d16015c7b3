"""DAG integrity and house-style policies, checked on one session-wide DagBag."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.orchestration.defaults import DOC_SECTIONS, OWNER, TAGS
from tests.conftest import REPO

DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
# The DAG ids of ARCHITECTURE.md that exist so far; each DAG issue adds its id here.
EXPECTED_DAG_IDS = {
    "backfill_range",
    "batch_score",
    "drift_monitor",
    "feature_pipeline",
    "promote_model",
    "train_model",
}
HEAVY = (
    "pandas",
    "pyspark",
    "torch",
    "mlflow",
    "xgboost",
    "great_expectations",
    "alibi_detect",
    "sklearn",
    "numpy",
    "scipy",
    "pyarrow",
)
TASK_ID = re.compile(r"^[a-z]+_[a-z0-9_]+$")


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, "\n".join(f"{k}:\n{v}" for k, v in dagbag.import_errors.items())


def test_expected_dags_present(dagbag):
    assert set(dagbag.dag_ids) >= EXPECTED_DAG_IDS


def test_one_dag_per_file_named_after_it(dagbag):
    by_file: dict[str, list[str]] = {}
    for dag in dagbag.dags.values():
        by_file.setdefault(Path(dag.fileloc).name, []).append(dag.dag_id)
    for file_name, dag_ids in by_file.items():
        assert dag_ids == [file_name.removesuffix(".py")], f"{file_name} defines {dag_ids}"
    assert len(by_file) == len(DAG_FILES)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_dag_policies(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag.doc_md, f"{dag_id} has no doc_md"
    for section in DOC_SECTIONS:
        assert section in dag.doc_md, f"{dag_id} doc_md lacks {section!r}"
    assert dag.tags, f"{dag_id} has no tags"
    assert set(dag.tags) <= TAGS, f"{dag_id} tags {dag.tags} outside the vocabulary"
    assert "loopline" in dag.tags
    assert dag.max_active_runs is not None
    assert dag.max_active_runs <= 4
    for task in dag.tasks:
        assert task.owner == OWNER, f"{dag_id}.{task.task_id} owner {task.owner!r}"
        # Sensors too: a timed-out wait never retries (AirflowSensorTimeout), a killed worker's sensor must.
        assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
        leaf = task.task_id.rsplit(".", 1)[-1]
        assert TASK_ID.match(leaf), f"{dag_id}.{task.task_id} is not verb_noun"


def test_spark_and_training_tasks_take_their_pools(dagbag):
    """Pools bound what the cluster and the GPUs take at once, whatever backfills and DAGs run together."""
    from loopline.config import get_config

    cfg = get_config()
    spark_tasks = []
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if type(task).__name__ == "_PySparkDecoratedOperator":
                spark_tasks.append(task.task_id)
                assert task.pool == cfg.spark.pool, f"{dag.dag_id}.{task.task_id} is a Spark task outside the pool"
    assert {"ingest_drop", "build_features", "score_champion"} <= set(spark_tasks)
    assert dagbag.get_dag("train_model").get_task("train_candidate").pool == cfg.training.pool


def test_all_dags_follow_policies(dagbag):
    # Not only the expected ones: any new DAG must follow the house style too.
    for dag_id in dagbag.dag_ids:
        test_dag_policies(dagbag, dag_id)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_parse_time(path):
    """Importing a DAG file must not import data/ML libraries (the scheduler parses it every few seconds)."""
    probe = (
        "import sys, json, runpy\n"
        "import airflow, airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"runpy.run_path({str(path)!r})\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} & set(heavy))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_are_wiring_only(path):
    """Module level: only airflow/loopline/stdlib imports, no Variable.get or connection lookups."""
    tree = ast.parse(path.read_text())
    allowed_roots = {"airflow", "loopline", "__future__", "datetime", "pendulum", "typing"}
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= allowed_roots, f"{path.name}: module-level import of {roots - allowed_roots}"
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and id(node) not in inside:
            name = ast.unparse(node.func)
            assert not name.endswith(("Variable.get", "get_connection", "get_hook")), (
                f"{path.name}:{node.lineno}: {name}() at parse time"
            )


def test_every_dag_has_a_typed_trigger_form(dagbag):
    """Each DAG's Params have a JSON-schema type and a description, and their defaults validate."""
    for dag in dagbag.dags.values():
        assert dag.params, f"{dag.dag_id} has no Params (no typed trigger form)"
        for name, param in dag.params.items():
            assert param.description, f"{dag.dag_id}.params.{name} has no description"
            assert "type" in param.schema or "enum" in param.schema, f"{dag.dag_id}.params.{name} has no type"
        dag.params.validate()  # the defaults are a valid form: scheduled runs never fail validation


def test_trigger_forms_survive_serialization_and_refuse_bad_conf(dagbag):
    """The UI renders the form from the serialized DAG and the API validates a trigger's conf against it:
    every Param keeps its schema and description there, and a wrong type is refused before a run exists."""
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    bad = {"batch_score": {"model_version": "latest"}, "drift_monitor": {"dry_run": "maybe"}}
    bad |= {"feature_pipeline": {"force_reingest": 3}, "train_model": {"window_days": 1}}
    bad |= {"promote_model": {"request_id": "latest"}}
    for dag_id, conf in bad.items():
        serialized = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.get_dag(dag_id)))
        for name, param in serialized.params.items():
            assert param.description, f"{dag_id}.params.{name} lost its description"
            assert param.schema.get("type") or param.schema.get("enum"), f"{dag_id}.params.{name} lost its type"
        serialized.params.deep_merge({}).validate()
        with pytest.raises(ParamValidationError):
            serialized.params.deep_merge(conf).validate()
