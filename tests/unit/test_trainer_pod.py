"""The production trainer pod, rendered without a cluster, and the DAG wiring for each runner."""

from __future__ import annotations

import os
import subprocess
import sys

from loopline.config import load_config
from loopline.orchestration import training_tasks
from tests.conftest import REPO

K8S = {"LOOPLINE__TRAINING__RUNNER": "kubernetes", "LOOPLINE__TRAINING__KUBERNETES__GPUS": "2"}


def test_pod_spec():
    cfg = load_config(environ=K8S)
    operator = training_tasks.trainer_pod(cfg)
    pod = operator.build_pod_request_obj(dry_run=True)
    spec = pod.spec
    container = spec.containers[0]
    kube = cfg.training.kubernetes

    assert container.image == kube.image
    assert pod.metadata.namespace == kube.namespace
    assert container.command == ["python", "-m", "loopline.training"]
    assert container.args[:2] == ["--cutoff", "{{ params.cutoff or (dag_run.run_after | ds) }}"]
    assert container.args[-2:] == ["--output-json", "/airflow/xcom/return.json"]
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    assert container.resources.requests["nvidia.com/gpu"] == "2"
    assert container.resources.limits["memory"] == kube.memory
    assert spec.node_selector == kube.node_selector
    assert [(t.key, t.operator, t.effect) for t in spec.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert spec.service_account_name == kube.service_account
    assert spec.security_context.run_as_non_root is True
    assert spec.security_context.run_as_user == 1000
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert [e.secret_ref.name for e in container.env_from] == [kube.secret_name]
    assert not any("PASSWORD" in (e.name or "") or "SECRET" in (e.name or "") for e in container.env or [])
    # XCom sidecar collects the trainer's JSON result.
    assert any(c.name == "airflow-xcom-sidecar" for c in spec.containers)
    assert operator.startup_timeout_seconds == kube.startup_timeout_seconds
    assert operator.schedule_timeout_seconds == kube.schedule_timeout_seconds
    assert operator.on_finish_action.value == "delete_succeeded_pod"


def test_cpu_only_pod_requests_no_gpu():
    pod = training_tasks.trainer_pod(load_config(environ={**K8S, "LOOPLINE__TRAINING__KUBERNETES__GPUS": "0"}))
    resources = pod.build_pod_request_obj(dry_run=True).spec.containers[0].resources
    assert "nvidia.com/gpu" not in resources.limits


def _dag_tasks(runner: str) -> dict:
    probe = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"dag = DagBag(dag_folder={str(REPO / 'dags' / 'train_model.py')!r}).dags['train_model']\n"
        "print(json.dumps({t.task_id: [type(t).__name__, t.pool] for t in dag.tasks}))\n"
    )
    env = {**os.environ, "LOOPLINE__TRAINING__RUNNER": runner}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def test_runner_is_configuration():
    # Either runner trains in the training pool (one slot per GPU): trainings never oversubscribe the GPUs.
    assert _dag_tasks("kubernetes") == {
        "train_candidate": ["KubernetesPodOperator", "training"],
        "gate_candidate": ["_PythonDecoratedOperator", "default_pool"],
    }
    assert _dag_tasks("local")["train_candidate"] == ["_PythonDecoratedOperator", "training"]
