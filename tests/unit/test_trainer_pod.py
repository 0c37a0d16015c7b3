"""The production trainer pod, rendered without a cluster, and the DAG wiring for each runner.

The pod is checked offline with :mod:`loopline.orchestration.podcheck`: it must be a valid Kubernetes API object
and meet the restricted Pod Security Standard (plus Loopline's hardening). Every rule of the checker is proven
here too, by a deliberately broken copy of the pod that it must catch.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from loopline.config import load_config
from loopline.orchestration import podcheck, training_tasks
from tests.conftest import REPO

K8S = {"LOOPLINE__TRAINING__RUNNER": "kubernetes", "LOOPLINE__TRAINING__KUBERNETES__GPUS": "2"}


def _render(environ: dict[str, str] | None = None, **kwargs: Any):
    cfg = load_config(environ={**K8S, **(environ or {})})
    return training_tasks.trainer_pod(cfg, environ=environ or {}, **kwargs).build_pod_request_obj(dry_run=True)


@pytest.fixture(scope="module")
def pod():
    return _render()


@pytest.fixture
def doc(pod) -> dict[str, Any]:
    """A fresh copy of the rendered pod's manifest (camelCase, as the API server gets it), to break."""
    return podcheck.manifest(pod)


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


# --- the Kubernetes API --------------------------------------------------------------------------------------


def test_pod_round_trips_through_the_api_models(pod):
    from kubernetes.client import V1Pod

    restored = podcheck.round_trip(pod)  # json, then ApiClient.deserialize(response, "V1Pod")
    assert isinstance(restored, V1Pod)
    # Identical on the wire (the operator keeps some fields as plain dicts, e.g. affinity {}, so compare manifests).
    assert podcheck.manifest(restored) == podcheck.manifest(pod)
    assert restored.spec.containers[0].resources == pod.spec.containers[0].resources
    assert restored.spec.security_context == pod.spec.security_context


@pytest.mark.parametrize("gpus", ["0", "1", "2"])
def test_pod_is_valid_for_the_api(gpus):
    pod = _render({"LOOPLINE__TRAINING__KUBERNETES__GPUS": gpus})
    assert podcheck.api_violations(pod) == []
    resources = pod.spec.containers[0].resources
    assert resources.limits.get("nvidia.com/gpu") == resources.requests.get("nvidia.com/gpu")  # both or neither


Keys = tuple[str | int, ...]  # keys and list indices into a manifest


def _parent(doc: dict, path: Keys, make: type | None = None) -> Any:
    node: Any = doc
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) or make is None else node.setdefault(key, make())
    return node


def _setter(path: Keys, value: Any) -> Callable[[dict], None]:
    def set_(doc: dict) -> None:
        _parent(doc, path, dict)[path[-1]] = copy.deepcopy(value)

    return set_


def _delete(path: Keys) -> Callable[[dict], None]:
    def delete(doc: dict) -> None:
        del _parent(doc, path)[path[-1]]

    return delete


def _append(path: Keys, item: Any) -> Callable[[dict], None]:
    def append(doc: dict) -> None:
        _parent(doc, path, dict).setdefault(path[-1], []).append(copy.deepcopy(item))

    return append


def _both(*changes: Callable[[dict], None]) -> Callable[[dict], None]:
    def apply(doc: dict) -> None:
        for change in changes:
            change(doc)

    return apply


BASE: Keys = ("spec", "containers", 0)
GPU = "nvidia.com/gpu"
API_CASES = {
    "GPU limit differs from the request": (
        _setter((*BASE, "resources", "limits", GPU), "3"),
        {"api:extended-resources"},
    ),
    "GPU requested without a limit": (_delete((*BASE, "resources", "limits", GPU)), {"api:extended-resources"}),
    "fractional GPU": (
        _both(
            _setter((*BASE, "resources", "limits", GPU), "500m"), _setter((*BASE, "resources", "requests", GPU), "500m")
        ),
        {"api:extended-resources"},
    ),
    "memory that is no quantity": (_setter((*BASE, "resources", "limits", "memory"), "16 GB"), {"api:resources"}),
    "request above the limit": (_setter((*BASE, "resources", "requests", "cpu"), "8"), {"api:resources"}),
    "resource name without a domain": (
        _both(
            _setter((*BASE, "resources", "limits", "gpu"), "1"), _setter((*BASE, "resources", "requests", "gpu"), "1")
        ),
        {"api:resources"},
    ),
    "scratch size that is no quantity": (
        _setter(("spec", "volumes", 1, "emptyDir", "sizeLimit"), "lots"),
        {"api:resources"},
    ),
    "toleration Exists with a value": (_setter(("spec", "tolerations", 0, "value"), "true"), {"api:tolerations"}),
    "toleration with an unknown effect": (_setter(("spec", "tolerations", 0, "effect"), "NoRun"), {"api:tolerations"}),
    "toleration with an unknown operator": (_setter(("spec", "tolerations", 0, "operator"), "In"), {"api:tolerations"}),
    "tolerationSeconds without NoExecute": (
        _setter(("spec", "tolerations", 0, "tolerationSeconds"), 60),
        {"api:tolerations"},
    ),
    "node selector key with a space": (
        _setter(("spec", "nodeSelector"), {"gpu present": "true"}),
        {"api:node-selector"},
    ),
    "node selector value too long": (_setter(("spec", "nodeSelector"), {"pool": "x" * 64}), {"api:node-selector"}),
    "secret name with capitals": (
        _setter((*BASE, "envFrom", 0, "secretRef", "name"), "Loopline_Trainer"),
        {"api:secret-ref"},
    ),
    "secret key reference with a bad key": (
        _append((*BASE, "env"), {"name": "S3_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "a/b"}}}),
        {"api:secret-ref"},
    ),
    "namespace with capitals": (_setter(("metadata", "namespace"), "Loopline"), {"api:name"}),
    "pod name longer than a label": (_setter(("metadata", "name"), "t" * 64), {"api:name"}),
    "container name with an underscore": (_setter((*BASE, "name"), "loopline_trainer"), {"api:name"}),
    "two containers of one name": (_setter(("spec", "containers", 1, "name"), "base"), {"api:name"}),
    "service account with a space": (_setter(("spec", "serviceAccountName"), "loopline trainer"), {"api:name"}),
    "volume name with a dot": (
        _both(
            _setter(("spec", "volumes", 1, "name"), "scratch.tmp"),
            _setter((*BASE, "volumeMounts", 1, "name"), "scratch.tmp"),
        ),
        {"api:name"},
    ),
    "mount of a missing volume": (_setter((*BASE, "volumeMounts", 1, "name"), "cache"), {"api:volume-mount"}),
    "environment variable name with a space": (_append((*BASE, "env"), {"name": "A B", "value": "1"}), {"api:env"}),
    "environment variable set twice": (_append((*BASE, "env"), {"name": "HOME", "value": "/"}), {"api:env"}),
    "label key with two slashes": (_setter(("metadata", "labels"), {"a/b/c": "x"}), {"api:metadata"}),
    "misspelt field (dropped by the API)": (
        _setter((*BASE, "securityContex"), {"privileged": True}),
        {"api:round-trip"},
    ),
    "field of the wrong type": (_setter(("spec", "hostNetwork"), "no"), {"api:round-trip"}),
    "container without a name": (_delete((*BASE, "name")), {"api:round-trip", "api:name"}),
    "a Deployment, not a Pod": (_setter(("kind",), "Deployment"), {"api:shape"}),
}


@pytest.mark.parametrize("case", API_CASES)
def test_api_check_catches(doc, case):
    assert podcheck.api_violations(doc) == []  # the rendered pod, as a manifest, passes
    change, rules = API_CASES[case]
    change(doc)
    violations = podcheck.api_violations(doc)
    assert {v.rule for v in violations} == rules, [str(v) for v in violations]


def test_every_api_rule_is_proven():
    proven = set().union(*(rules for _, rules in API_CASES.values()))
    assert {rule for rule in podcheck.RULES if rule.startswith("api:")} <= proven


# --- restricted Pod Security Standard ------------------------------------------------------------------------


def test_pod_meets_the_restricted_standard(pod):
    assert podcheck.security_violations(pod) == []
    spec = pod.spec
    kube = load_config(environ=K8S).training.kubernetes
    ctx = spec.security_context
    assert (ctx.run_as_non_root, ctx.run_as_user, ctx.run_as_group, ctx.fs_group) == (True, 1000, 1000, 1000)
    assert ctx.seccomp_profile.type == "RuntimeDefault"  # at pod level: covers the sidecar too
    assert spec.automount_service_account_token is False
    assert [spec.host_network, spec.host_pid, spec.host_ipc] == [False, None, None]
    assert all(v.host_path is None for v in spec.volumes)
    for container in spec.containers:  # the trainer and the XCom sidecar alike
        sc = container.security_context
        assert sc.allow_privilege_escalation is False
        assert sc.privileged is False
        assert sc.read_only_root_filesystem is True
        assert sc.capabilities.drop == ["ALL"]
        assert sc.capabilities.add is None
    scratch = next(v for v in spec.volumes if v.name == "scratch")
    assert scratch.empty_dir.size_limit == kube.scratch_size


def test_everything_that_writes_writes_to_a_volume(pod):
    trainer = pod.spec.containers[0]
    mounts = [m.mount_path for m in trainer.volume_mounts]
    assert training_tasks.SCRATCH in mounts
    env = {e.name: e.value for e in trainer.env}
    for name in ("HOME", "TMPDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "LOOPLINE_HOME"):
        assert env[name] == training_tasks.SCRATCH or env[name].startswith(training_tasks.SCRATCH + "/"), name
    assert any(training_tasks.XCOM_RESULT.startswith(m + "/") for m in mounts)  # the result, for the sidecar


def test_the_image_runs_as_the_pod_user():
    # A read-only root: the image must not need to write (no .pyc), and its user is the pod's default one.
    dockerfile = (REPO / "docker" / "trainer.Dockerfile").read_text()
    kube = load_config(environ=K8S).training.kubernetes
    assert re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M).groups() == (
        str(kube.run_as_user),
        str(kube.run_as_group),
    )
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile


SC: Keys = (*BASE, "securityContext")
POD_SC: Keys = ("spec", "securityContext")
SECURITY_CASES = {
    "privileged container": (_setter((*SC, "privileged"), True), {"baseline:privileged"}),
    "privileged sidecar": (
        _setter(("spec", "containers", 1, "securityContext", "privileged"), True),
        {"baseline:privileged"},
    ),
    "host network": (_setter(("spec", "hostNetwork"), True), {"baseline:host-namespaces"}),
    "host PID": (_setter(("spec", "hostPID"), True), {"baseline:host-namespaces"}),
    "host IPC": (_setter(("spec", "hostIPC"), True), {"baseline:host-namespaces"}),
    "hostPath volume": (
        _append(("spec", "volumes"), {"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}),
        {"baseline:host-path", "restricted:volume-types"},
    ),
    "NFS volume": (
        _append(("spec", "volumes"), {"name": "data", "nfs": {"server": "nfs.local", "path": "/data"}}),
        {"restricted:volume-types"},
    ),
    "host port": (_append((*BASE, "ports"), {"containerPort": 8080, "hostPort": 8080}), {"baseline:host-ports"}),
    "SYS_ADMIN added": (
        _setter((*SC, "capabilities", "add"), ["SYS_ADMIN"]),
        {"baseline:capabilities", "restricted:capabilities"},
    ),
    "CHOWN added (baseline allows it)": (_setter((*SC, "capabilities", "add"), ["CHOWN"]), {"restricted:capabilities"}),
    "capabilities not dropped": (_delete((*SC, "capabilities")), {"restricted:capabilities"}),
    "seccomp missing": (_delete((*POD_SC, "seccompProfile")), {"restricted:seccomp"}),
    "seccomp Unconfined": (
        _setter((*POD_SC, "seccompProfile", "type"), "Unconfined"),
        {"baseline:seccomp", "restricted:seccomp"},
    ),
    "root user": (_setter((*POD_SC, "runAsUser"), 0), {"restricted:run-as-user"}),
    "container as root": (_setter((*SC, "runAsUser"), 0), {"restricted:run-as-user"}),
    "runAsNonRoot false": (_setter((*POD_SC, "runAsNonRoot"), False), {"restricted:run-as-non-root"}),
    "container runAsNonRoot false": (_setter((*SC, "runAsNonRoot"), False), {"restricted:run-as-non-root"}),
    "privilege escalation allowed": (
        _setter((*SC, "allowPrivilegeEscalation"), True),
        {"restricted:privilege-escalation"},
    ),
    "privilege escalation unset": (_delete((*SC, "allowPrivilegeEscalation")), {"restricted:privilege-escalation"}),
    "unsafe sysctl": (
        _setter((*POD_SC, "sysctls"), [{"name": "kernel.msgmax", "value": "65536"}]),
        {"baseline:sysctls"},
    ),
    "AppArmor unconfined": (_setter((*SC, "appArmorProfile"), {"type": "Unconfined"}), {"baseline:apparmor"}),
    "AppArmor annotation unconfined": (
        _setter(("metadata", "annotations"), {"container.apparmor.security.beta.kubernetes.io/base": "unconfined"}),
        {"baseline:apparmor"},
    ),
    "custom SELinux user": (_setter((*POD_SC, "seLinuxOptions"), {"user": "system_u"}), {"baseline:selinux"}),
    "unmasked /proc": (_setter((*SC, "procMount"), "Unmasked"), {"baseline:proc-mount"}),
    "Windows HostProcess": (_setter((*SC, "windowsOptions"), {"hostProcess": True}), {"baseline:host-process"}),
    "writable root filesystem": (_setter((*SC, "readOnlyRootFilesystem"), False), {"hardening:read-only-root"}),
    "service account token mounted": (
        _delete(("spec", "automountServiceAccountToken")),
        {"hardening:service-account-token"},
    ),
    "root group": (_setter((*POD_SC, "runAsGroup"), 0), {"hardening:non-root-ids"}),
    "no fsGroup": (_delete((*POD_SC, "fsGroup")), {"hardening:non-root-ids"}),
    "no user at all (the image's, maybe root)": (_delete((*POD_SC, "runAsUser")), {"hardening:non-root-ids"}),
    "credential as a literal env value": (
        _append((*BASE, "env"), {"name": "MLFLOW_TRACKING_" + "TOKEN", "value": "t0k3n"}),
        {"hardening:env-credentials"},
    ),
    "password inside a URL": (
        _append((*BASE, "env"), {"name": "MLFLOW_TRACKING_URI", "value": "https://" + "ml:" + "pw" + "@mlflow"}),
        {"hardening:env-credentials"},
    ),
    "init container without a security context": (
        _append(("spec", "initContainers"), {"name": "fetch", "image": "busybox:1.36"}),
        {"restricted:privilege-escalation", "restricted:capabilities", "hardening:read-only-root"},
    ),
}


@pytest.mark.parametrize("case", SECURITY_CASES)
def test_security_check_catches(doc, case):
    assert podcheck.security_violations(doc) == []  # the rendered pod, as a manifest, passes
    change, rules = SECURITY_CASES[case]
    change(doc)
    violations = podcheck.security_violations(doc)
    assert {v.rule for v in violations} == rules, [str(v) for v in violations]
    pss_only = {v.rule for v in podcheck.security_violations(doc, hardening=False)}
    assert pss_only == {rule for rule in rules if not rule.startswith("hardening:")}


def test_every_security_rule_is_proven():
    proven = set().union(*(rules for _, rules in SECURITY_CASES.values()))
    assert {rule for rule in podcheck.RULES if not rule.startswith("api:")} <= proven


def test_operator_options_that_weaken_the_pod_are_caught():
    # The same checks on a V1Pod the operator built, not only on a hand-edited manifest.
    rules = {v.rule for v in podcheck.check_pod(_render(hostnetwork=True))}
    assert rules == {"baseline:host-namespaces"}


# --- environment ---------------------------------------------------------------------------------------------

WORKER_ENV = {
    "LOOPLINE__TRAINING__MODEL_TYPE": "mlp",
    "LOOPLINE__STORAGE__LAKE_URI": "s3://loopline-lake/lake",
    "LOOPLINE__MLFLOW__TRACKING_URI": "http://mlflow-config:5000",
    "MLFLOW_TRACKING_URI": "http://mlflow.mlops:5000",  # the worker uses this one, not the config's
    "MLFLOW_TRACKING_USERNAME": "airflow",  # MLflow's login: the pod has its own, in the secret
    "LOOPLINE__POSTGRES__CONN_ID": "warehouse",  # not a setting the trainer reads
    "LOOPLINE__TRAINING__KUBERNETES__GPUS": "2",  # how to build the pod
    "AWS_ACCESS_KEY_ID": "worker-key-id",
    "AIRFLOW_CONN_LOOPLINE_S3": "aws://",
    "AIRFLOW__CORE__FERNET_KEY": "worker-fernet",
    "PATH": "/home/airflow/.local/bin:/usr/bin",
    "HOME": "/home/airflow",
}


def test_pod_environment_is_an_allowlist():
    container = _render(WORKER_ENV).spec.containers[0]
    env = {e.name: e.value for e in container.env}
    assert env == {
        "LOOPLINE__TRAINING__MODEL_TYPE": "mlp",
        "LOOPLINE__STORAGE__LAKE_URI": "s3://loopline-lake/lake",
        # As config, so that an MLFLOW_TRACKING_URI in the pod's secret still wins (env would beat envFrom).
        "LOOPLINE__MLFLOW__TRACKING_URI": "http://mlflow.mlops:5000",
        "LOOPLINE__TRAINING__RUNNER": "kubernetes",
        **training_tasks.SCRATCH_ENV,  # HOME is the pod's scratch, not the worker's home
    }
    assert all(e.value_from is None for e in container.env)  # credentials: only the secret (envFrom)
    # What the pod gets is a valid configuration for the trainer, with the worker's overrides.
    cfg = load_config(environ=env)
    assert (cfg.training.model_type, cfg.storage.lake_uri) == ("mlp", "s3://loopline-lake/lake")
    assert cfg.mlflow.tracking_uri == "http://mlflow.mlops:5000"


def test_pod_environment_defaults_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("LOOPLINE__TRAINING__SEED", "7")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.mlops:5000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "worker-key-id")
    env = training_tasks.trainer_env()
    assert env["LOOPLINE__TRAINING__SEED"] == "7"
    assert env["LOOPLINE__MLFLOW__TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert not {"AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_URI", "PATH"} & set(env)


# --- the command line ----------------------------------------------------------------------------------------


def test_podcheck_command_line(tmp_path, capsys, doc):
    assert podcheck.main([]) == 0  # the configured trainer pod
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok:")  # after the operator's log line
    doc["spec"]["hostPID"] = True
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(doc))
    assert podcheck.main([str(manifest)]) == 1
    assert "spec.hostPID: shares a host namespace [baseline:host-namespaces]" in capsys.readouterr().out


# --- DAG wiring ----------------------------------------------------------------------------------------------


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
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_runner_is_configuration():
    # Either runner trains in the training pool (one slot per GPU): trainings never oversubscribe the GPUs.
    assert _dag_tasks("kubernetes") == {
        "train_candidate": ["KubernetesPodOperator", "training"],
        "gate_candidate": ["_PythonDecoratedOperator", "default_pool"],
        "release_inputs": ["_PythonDecoratedOperator", "default_pool"],
    }
    assert _dag_tasks("local")["train_candidate"] == ["_PythonDecoratedOperator", "training"]
