"""Tasks of the ``train_model`` DAG: one trainer entrypoint, two runners, and the registry gate.

The trainer is ``python -m loopline.training`` with the same arguments everywhere. ``training.runner``
picks where it runs: ``local`` runs it as a child process of the task (the embedded default, CPU), and
``kubernetes`` runs it in a pod built by :func:`trainer_pod` (GPU requests/limits, tolerations, node
selector, the restricted Pod Security Standard, credentials from a Kubernetes secret). Both hand back the
trainer's JSON result. :mod:`loopline.orchestration.podcheck` checks the pod offline.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, task
from airflow.sdk.exceptions import AirflowFailException

from loopline.config import LooplineConfig, get_config
from loopline.orchestration.database import predictions_db
from loopline.training import MODEL_TYPES

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

# The trainer's command line, rendered by Airflow per run (conf from drift_monitor overrides params).
# run_after, not ds: a run triggered from the UI or the CLI in Airflow 3 may have no logical date.
TRAINER_ARGS = [
    "--cutoff", "{{ params.cutoff or (dag_run.run_after | ds) }}",
    "--model-type", "{{ params.model_type }}",
    "--window-days", "{{ params.window_days }}",
    "--max-rounds", "{{ params.max_rounds }}",
    "--learning-rate", "{{ params.learning_rate }}",
    "--reason", "{{ params.reason }}",
    "--triggered-by", "{{ dag_run.conf.get('triggered_by') or dag_run.run_type }}",
    "--run-name", "{{ dag.dag_id }}__{{ run_id }}__try{{ ti.try_number }}",
    # The lake versions it reads are pinned under the run (lake.run_pin_id) until release_inputs lifts the pin.
    "--pin-id", "{{ dag.dag_id }}__{{ run_id }}",
]  # fmt: skip
XCOM_RESULT = "/airflow/xcom/return.json"  # where KubernetesPodOperator collects a pod's XCom

# The trainer pod's root filesystem is read-only; its one writable place is an emptyDir mounted here (the
# pod's own /tmp, so tools that hard-code /tmp work too), and everything that writes is pointed at it.
SCRATCH = "/tmp"  # noqa: S108 - a volume of the pod, not a directory shared with other users
SCRATCH_ENV = {
    "HOME": SCRATCH,
    "TMPDIR": SCRATCH,
    "XDG_CACHE_HOME": f"{SCRATCH}/.cache",  # torch, triton, pip
    "XDG_CONFIG_HOME": f"{SCRATCH}/.config",
    "MPLCONFIGDIR": f"{SCRATCH}/matplotlib",  # matplotlib's font cache (the MLflow plots)
    "LOOPLINE_HOME": f"{SCRATCH}/loopline",  # relative config paths resolve here, not in site-packages
}
# What the pod inherits from the environment building it (fnmatch patterns): overrides of the settings the
# trainer reads (TrainingOptions.from_config). Nothing else of the worker's environment reaches the pod;
# credentials come only from the Kubernetes secret (training.kubernetes.secret_name).
TRAINER_ENV_ALLOWLIST = (
    "LOOPLINE__TRAINING__*",
    "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS",
    "LOOPLINE__STORAGE__LAKE_URI",
    "LOOPLINE__MLFLOW__TRACKING_URI",
    "LOOPLINE__MLFLOW__ARTIFACT_URI",
    "LOOPLINE__MLFLOW__EXPERIMENT",
    "LOOPLINE__SCORING__THRESHOLD",
    "LOOPLINE__SCORING__THRESHOLD_POLICY__*",  # the trainer chooses the version's threshold
    "LOOPLINE__DRIFT__REFERENCE_SAMPLE_SIZE",
)
TRAINER_ENV_EXCLUDED = ("LOOPLINE__TRAINING__KUBERNETES__*",)  # how to build the pod: not the trainer's business
# The worker's MLflow server goes in as a config override, not as MLFLOW_TRACKING_URI itself: an env var would
# beat the secret's variable of that name (env wins over envFrom), while the trainer prefers the variable to the
# config, so a URI in the secret still decides and the worker's is the fallback.
TRAINER_ENV_AS_CONFIG = {"MLFLOW_TRACKING_URI": "LOOPLINE__MLFLOW__TRACKING_URI"}


def params(cfg: LooplineConfig) -> dict[str, Param]:
    """The typed trigger form of ``train_model`` (validated by Airflow before a run is created)."""
    return {
        "model_type": Param(cfg.training.model_type, type="string", enum=list(MODEL_TYPES),
                            description="Model family to train."),
        "window_days": Param(cfg.training.window_days, type="integer", minimum=7, maximum=365,
                             description="Days of features (before the cut-off) in the training window."),
        "max_rounds": Param(cfg.training.max_rounds, type="integer", minimum=10, maximum=5000,
                            description="Boosting rounds / epochs upper bound (early stopping decides)."),
        "learning_rate": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                               description="Learning rate; empty uses the model type's default."),
        "cutoff": Param(None, type=["null", "string"], format="date",
                        description="Label cut-off date (YYYY-MM-DD); empty means the run's date."),
        "reason": Param("scheduled retraining", type="string", minLength=3, maxLength=500,
                        description="Why this training runs; recorded with the model and any alias move."),
    }  # fmt: skip


def trainer_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The trainer pod's environment: the allowlisted variables of ``environ`` (default ``os.environ``), the runner
    and the scratch locations. Never credentials: the pod reads those from the secret.
    """
    environ = os.environ if environ is None else environ
    forwarded = {
        name: environ[name]
        for name in sorted(environ)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in TRAINER_ENV_ALLOWLIST)
        and not any(fnmatch.fnmatchcase(name, pattern) for pattern in TRAINER_ENV_EXCLUDED)
    }
    for name, override in TRAINER_ENV_AS_CONFIG.items():
        if environ.get(name):  # the worker prefers it to the config too
            forwarded[override] = environ[name]
    return {**forwarded, "LOOPLINE__TRAINING__RUNNER": "kubernetes", **SCRATCH_ENV}


def _container_security_context() -> k8s.V1SecurityContext:
    """The restricted profile for one container: no escalation, no capabilities, read-only root filesystem."""
    from kubernetes.client import models as k8s

    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
    )


def trainer_pod(cfg: LooplineConfig, environ: Mapping[str, str] | None = None, **kwargs: Any) -> KubernetesPodOperator:
    """The production runner: a KubernetesPodOperator running the trainer image on a GPU node.

    The pod meets the restricted Pod Security Standard (non-root, seccomp RuntimeDefault, no privilege
    escalation, all capabilities dropped, read-only root filesystem with an emptyDir for scratch, no service
    account token) and gets only :func:`trainer_env` of ``environ`` plus the secret. ``kwargs`` go to the operator.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    kube = cfg.training.kubernetes
    limits = {"cpu": kube.cpu, "memory": kube.memory}
    if kube.gpus:
        limits["nvidia.com/gpu"] = str(kube.gpus)  # an extended resource: the request must equal the limit
    return KubernetesPodOperator(
        task_id="train_candidate",
        name="loopline-trainer",
        namespace=kube.namespace,
        image=kube.image,
        cmds=["python", "-m", "loopline.training"],
        arguments=[*TRAINER_ARGS, "--output-json", XCOM_RESULT],
        service_account_name=kube.service_account,
        automount_service_account_token=False,  # the trainer never talks to the Kubernetes API
        container_resources=k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        node_selector=dict(kube.node_selector),
        tolerations=[k8s.V1Toleration(**t) for t in kube.tolerations],
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=kube.run_as_user, run_as_group=kube.run_as_group,
            fs_group=kube.run_as_group, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=_container_security_context(),
        # The XCom sidecar is a container of the same pod: the restricted profile applies to it as well.
        xcom_sidecar_container_security_context=_container_security_context(),
        volumes=[k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=kube.scratch_size))],
        volume_mounts=[k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH)],
        # MLflow and object-store credentials come from a Kubernetes secret, never from Airflow.
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=kube.secret_name))],
        env_vars=trainer_env(environ),
        startup_timeout_seconds=kube.startup_timeout_seconds,
        schedule_timeout_seconds=kube.schedule_timeout_seconds,
        on_finish_action="delete_succeeded_pod",  # failed pods stay for triage
        pool=cfg.training.pool,  # one pod per GPU slot, whatever else is queued
        get_logs=True,
        do_xcom_push=True,
        **kwargs,
    )  # fmt: skip


@task(task_id="train_candidate")
def train_local(args: list[str]) -> dict:
    """The embedded runner: the same trainer command as a child process; returns its JSON result.

    The child inherits MLflow's URI and credentials (:func:`~loopline.orchestration.mlflow_access.configure_mlflow`)
    through its environment, never its command line, which every user of the machine sees in ``ps``.
    """
    from loopline.orchestration.mlflow_access import configure_mlflow

    configure_mlflow()
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "loopline.training", *args, "--output-json", str(output)]
        completed = subprocess.run(command, text=True, capture_output=True, env=_with_search_storage(os.environ))
        sys.stdout.write(completed.stdout[-20000:])
        if completed.returncode == 2:  # bad input or no data: retrying will not help
            raise AirflowFailException(completed.stderr.strip().splitlines()[-1] if completed.stderr else "no data")
        if completed.returncode != 0:
            raise RuntimeError(f"trainer exited with {completed.returncode}:\n{completed.stderr[-5000:]}")
        result = json.loads(output.read_text())
    from loopline import lineage
    from loopline.orchestration.lineage import namespace, report_lineage

    ns = namespace()
    report_lineage(
        lineage.training_inputs(ns, result.get("fingerprint") or {}), [lineage.mlflow_run(ns, result["run_id"])]
    )
    return result


def _with_search_storage(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus the search's study storage: unless one is configured, the loader's connection to the
    predictions database with the tables in ``postgres.search_schema``, so a killed search resumes."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from loopline.training import search

    env = dict(environ)
    cfg = get_config()
    if search.storage_url(cfg.training.search.storage_url, environ):
        return env
    try:
        uri = PostgresHook(postgres_conn_id=cfg.postgres.conn_id).get_uri()
    except AirflowNotFoundException:  # no predictions database: the study lives in memory
        return env
    env[search.STORAGE_ENV] = search.rdb_url(uri, cfg.postgres.search_schema)
    return env


def train_candidate(cfg: LooplineConfig):
    """The training task's result (XComArg) for the configured runner: same arguments, same JSON."""
    if cfg.training.runner == "kubernetes":
        return trainer_pod(cfg).output
    return train_local.override(pool=cfg.training.pool)(TRAINER_ARGS)


@task
def gate_candidate(result: dict, params: dict | None = None, dag_run: Any = None) -> dict:
    """Register the candidate, compare it with the champion on the same holdout, move one alias.

    A gate error (model cannot be loaded back, tampered or pickled artifacts, unusable predictions) fails the
    task and never touches the champion. Every alias move is recorded in ``<schema>.model_alias_history`` in
    Postgres (pending before the MLflow move, applied after it), with the SHA-256 of the version's artifacts in
    ``<schema>.model_artifact_digests`` in the same transaction; moves a crash left pending are reconciled first.
    """
    import logging

    from loopline import registry
    from loopline.orchestration.mlflow_access import mlflow_client

    cfg = get_config()
    log = logging.getLogger(__name__)
    client = mlflow_client(cfg)
    triggered_by = (dag_run.conf or {}).get("triggered_by") or str(dag_run.run_type)
    with predictions_db(cfg) as conn:
        try:
            decision, move = registry.register_and_gate(
                client,
                run_id=result["run_id"],
                model_name=cfg.mlflow.registered_model,
                gate=cfg.gate,
                threshold=cfg.scoring.threshold,
                triggered_by=triggered_by,
                reason=params["reason"],
                conn=conn,
                schema=cfg.postgres.schema_,
                allow_pickled=cfg.registry.allow_pickled_models,
                policy=cfg.promotion.policy,
            )
        except registry.GateError as exc:
            raise AirflowFailException(f"gate error, champion unchanged: {exc}") from exc
    log.info("gate: %s -> alias %s on v%s: %s", result["run_id"], move.alias, move.version, decision.reason)
    from loopline.model_card import card_url
    from loopline.orchestration import links

    links.record(links.CARD_KEY, card_url(cfg.mlflow.ui_url, result["run_id"]))
    # A retry re-registers nothing (the gate is idempotent per run) and rewrites the same pin.
    pin = pin_model_inputs(cfg, cfg.mlflow.registered_model, move.version, result.get("fingerprint") or {})
    log.info("data fingerprint of v%s pinned in the lake: %s", move.version, pin)
    from loopline import lineage
    from loopline.orchestration.lineage import namespace, report_lineage

    # The partitions too, not only the run: with the Kubernetes runner the training task reports nothing.
    ns = namespace()
    report_lineage(
        [lineage.mlflow_run(ns, result["run_id"]), *lineage.training_inputs(ns, result.get("fingerprint") or {})],
        [lineage.model_version(ns, cfg.mlflow.registered_model, move.version)],
    )
    return {
        "promoted": decision.promote,
        "alias": move.alias,
        "version": move.version,
        "reason": decision.reason,
        "run_id": result["run_id"],
        "metrics": move.metrics,
    }


def _lake(cfg: LooplineConfig, root: str | None = None):
    from loopline.config import resolve_uri
    from loopline.lake import Lake

    return Lake(root or resolve_uri(cfg.storage.lake_uri))


def pin_model_inputs(cfg: LooplineConfig, model_name: str, version: int, fingerprint: dict) -> str:
    """Pin the lake versions of a registered model version's data fingerprint for as long as the version lives."""
    from loopline.lake import model_pin_id
    from loopline.training.dataset import fingerprint_versions

    lake = _lake(cfg, fingerprint.get("lake"))
    return lake.pin(model_pin_id(model_name, version), fingerprint_versions(fingerprint), kind="model")


@task(trigger_rule="all_done")
def release_inputs(dag: Any = None, run_id: str | None = None) -> dict:
    """Lift the run's pin on the lake versions it read (whatever happened to the run), then the pins of model
    versions deleted from the registry. A registered version's own pin (gate_candidate) stays."""
    import logging

    from loopline.lake import run_pin_id

    cfg = get_config()
    log = logging.getLogger(__name__)
    lake = _lake(cfg)
    pin_id = run_pin_id(dag.dag_id, run_id)
    released = lake.release(pin_id)
    log.info("run pin %s: %s", pin_id, "released" if released else "none held (the trainer read nothing)")
    pruned: list[str] = []
    try:
        from loopline.orchestration.mlflow_access import mlflow_client

        name = cfg.mlflow.registered_model
        live = [v.version for v in mlflow_client(cfg).search_model_versions(f"name = '{name}'")]
        pruned = lake.release_model_pins(name, live)
    except Exception:  # a registry hiccup only delays the pruning of pins: never fails the run's cleanup
        log.exception("could not prune the pins of deleted model versions; the next run tries again")
    if pruned:
        log.info("released the pins of deleted model versions: %s", ", ".join(pruned))
    return {"pin_id": pin_id, "released": released, "pruned_model_pins": pruned}
