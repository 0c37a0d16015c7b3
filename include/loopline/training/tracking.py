"""MLflow: one run per training, everything the gate, scoring and drift monitor need later.

Layout of a run (artifact paths):

=====================================  ==============================================================
``model/``                             the pyfunc, logged as code (:mod:`~loopline.training.pyfunc_code`,
                                       no pickle), ``runs:/<run_id>/model``; the trained folder is inside it under
                                       ``artifacts/fraud_model/`` (XGBoost: ``booster.json``, the raw
                                       booster for TreeSHAP contributions; MLP: ``mlp.pt``)
``xgboost/booster.json``               XGBoost only: the raw booster again, as a plain run artifact
``holdout.parquet``                    the holdout rows (FEATURE_COLUMNS, ``is_fraud``, ``ds``): the gate
                                       re-scores the champion on exactly these rows
``reference_sample.parquet``           a seeded sample of the newest mature days' features (validation +
                                       holdout) plus this model's ``score``: the drift monitor's reference
``fingerprint.json``                   the training set's fingerprint (partitions and versions, counts)
``metrics.json``                       validation and holdout metrics, as logged
``threshold.json``                     the version's threshold and the policy that chose it on validation
                                       (also in ``meta.json``'s ``decision``: scoring and the gate use it)
``plots/``                             ROC, PR, calibration (holdout) and feature importance PNGs
=====================================  ==============================================================

Params: model type, hyper-parameters, window, cutoff, device and the fingerprint's scalars
(``fingerprint.*``). Metrics: ``val_*`` and ``holdout_*`` (see :func:`loopline.training.evaluate.evaluate`),
``train_seconds``, ``train_rows_per_second``, ``best_iteration`` and the validation PR AUC curve
(``val_pr_auc_curve`` by step). Tags: ``loopline.trigger``, ``loopline.reason``, ``loopline.model_type``,
``loopline.cutoff``, ``loopline.device``, ``loopline.data_sha256``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.schemas import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from loopline.training.models import INPUT_COLUMNS, FraudModel

MODEL_NAME = "model"
_REMOTE_SCHEMES = ("http://", "https://", "databricks")


def tracking_uri(configured: str, override: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the configured (resolved) URI."""
    from loopline.config import resolve_uri

    return override or os.environ.get("MLFLOW_TRACKING_URI") or resolve_uri(configured)


def mlflow_client(uri: str | None = None) -> Any:
    """The one way Loopline builds an ``MlflowClient``: for ``uri`` when given (a task passes the URI its
    Airflow connection configured, the trainer the one it tracks to), else for :func:`tracking_uri` of the
    loaded configuration (``MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri`` resolved under home)."""
    from mlflow import MlflowClient

    if uri is None:
        from loopline.config import get_config

        uri = tracking_uri(get_config().mlflow.tracking_uri)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(name: str, uri: str, artifact_root: str | None) -> str:
    """The experiment's id, creating it if needed.

    Against a tracking server the server chooses the artifact location; against a store used directly
    (SQLite, a database URL) new experiments put artifacts under ``artifact_root/<name>``.
    """
    import mlflow

    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if artifact_root and not uri.startswith(_REMOTE_SCHEMES):
        location = f"{artifact_root.rstrip('/')}/{name}"
        if "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another trainer
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def signature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns typed as the signature declares them: integers as long, floats as double,
    categoricals as string. Spark's int/long/double feature columns all pass that schema."""
    out = frame[list(INPUT_COLUMNS)].copy()
    for name in NUMERIC_FEATURES:
        kind = out[name].dtype.kind
        if kind in "iub":
            out[name] = out[name].astype("int64")
        else:
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    for name in CATEGORICAL_FEATURES:
        out[name] = out[name].astype("object")
    return out.reset_index(drop=True)


def pip_requirements(model_type: str) -> list[str]:
    """Exact pins of what the pyfunc needs to load (the ``loopline`` package itself comes with the image)."""
    names = ["mlflow", "numpy", "pandas", "pyarrow", "scikit-learn"]
    names.append("xgboost" if model_type == "xgboost" else "torch")
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")  # torch 2.13.0+cpu -> 2.13.0
        except metadata.PackageNotFoundError:  # pragma: no cover
            pins.append(name)
    return pins


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def fingerprint_params(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint's scalars as ``fingerprint.*`` params (partition maps stay in fingerprint.json)."""
    flat: dict[str, Any] = {}
    for key, value in fingerprint.items():
        if key in ("feature_partitions", "label_partitions"):
            flat[f"fingerprint.{key}_count"] = len(value)
        elif key == "missing_feature_days":
            flat[f"fingerprint.{key}"] = ",".join(value) or "none"
        else:
            _flatten(f"fingerprint.{key}", value, flat)
    return flat


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def training_key(run_name: str) -> str:
    """The training a run is an attempt of: its name without the ``__try<N>`` the DAG appends."""
    return re.sub(r"__try\d+$", "", run_name)


def end_abandoned_runs(experiment_id: str, run_name: str) -> list[str]:
    """Mark earlier attempts of the same training still ``RUNNING`` as ``KILLED``; returns their run ids.

    A trainer killed mid-run (OOM, SIGKILL, a lost pod) never ends its MLflow run, which would show as
    running forever. Attempts of one training never overlap (``train_model`` runs one at a time, its task
    tries in turn), so when the next attempt starts, any earlier one still marked running is dead.
    """
    import mlflow

    client = mlflow_client(mlflow.get_tracking_uri())
    key = training_key(run_name)
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    abandoned = [run.info.run_id for run in running if training_key(run.info.run_name or "") == key]
    # A killed search leaves its trial's nested run running too.
    abandoned += [
        run.info.run_id
        for run in running
        if run.info.run_id not in abandoned and run.data.tags.get("mlflow.parentRunId") in abandoned
    ]
    for run_id in abandoned:
        client.set_tag(run_id, "loopline.abandoned", "a later attempt of this training started; this one had died")
        client.set_terminated(run_id, status="KILLED")
    return abandoned


def lake_inputs(fingerprint: dict[str, Any], namespace: str | None = None) -> list[tuple[Any, str, dict[str, str]]]:
    """The fingerprint's lake partitions as MLflow datasets: ``(dataset, context, tags)`` for ``mlflow.log_inputs``.

    Each is named by its lineage dataset name (:mod:`loopline.lineage`), its source is the exact version's
    folder in the lake and its digest the version: a registered version's run leads back to those partitions.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from loopline import lake as tables
    from loopline import lineage
    from loopline.config import get_config

    ns = namespace or get_config().lineage.namespace
    root = str(fingerprint.get("lake") or "").rstrip("/")
    found = []
    for key, table, context in (
        ("feature_partitions", tables.FEATURES, "training"),
        ("label_partitions", tables.LABELED_TRANSACTIONS, "labels"),
    ):
        for ds, version in sorted((fingerprint.get(key) or {}).items()):
            uri = f"{root}/{table}/ds={ds}/run={version}"
            name = lineage.lake(ns, table, ds, version).name
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": two local sources, one meaning
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(uri)
            dataset = MetaDataset(source=source, name=name, digest=str(version)[:36])
            tags = {"loopline.table": table, "loopline.ds": str(ds), "loopline.version": str(version)}
            found.append((dataset, context, {**tags, "lineage.namespace": ns}))
    return found


def log_lake_inputs(fingerprint: dict[str, Any]) -> int:
    """``mlflow.log_inputs`` of the partitions the training set read (see :func:`lake_inputs`); returns how many."""
    import mlflow

    inputs = lake_inputs(fingerprint)
    for start in range(0, len(inputs), 100):  # MLflow's batch limit per call
        batch = inputs[start : start + 100]
        mlflow.log_inputs(
            datasets=[d for d, _, _ in batch], contexts=[c for _, c, _ in batch], tags_list=[t for _, _, t in batch]
        )
    return len(inputs)


def log_training_run(
    run,
    *,
    model: FraudModel,
    params: dict[str, Any],
    fingerprint: dict[str, Any],
    metrics: dict[str, float],
    plots: list[Path],
    holdout: pd.DataFrame,
    reference: pd.DataFrame,
    threshold: float,
    decision: dict[str, Any] | None = None,
) -> str:
    """Log everything into the active ``run``; returns the logged model's URI (``models:/m-...``).

    ``decision`` (the threshold and its policy) is logged as ``threshold.json`` and travels in ``meta.json``.
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    from loopline.training.pyfunc import ARTIFACT_KEY

    run_id = run.info.run_id
    client = mlflow_client(mlflow.get_tracking_uri())
    mlflow.log_params({key: str(value)[:6000] for key, value in {**params, **fingerprint_params(fingerprint)}.items()})
    mlflow.log_metrics(metrics)
    history = [
        Metric("val_pr_auc_curve", float(value), 0, step)
        for step, value in enumerate(model.fit_info.history)
        if math.isfinite(value)
    ]
    for start in range(0, len(history), 1000):
        client.log_batch(run_id, metrics=history[start : start + 1000])
    mlflow.log_dict(json_safe(fingerprint), "fingerprint.json")
    log_lake_inputs(fingerprint)
    mlflow.log_dict(json_safe(metrics), "metrics.json")
    if decision is not None:
        mlflow.log_dict(json_safe(decision), "threshold.json")
    for path in plots:
        mlflow.log_artifact(str(path), "plots")

    with tempfile.TemporaryDirectory(prefix="loopline-train-") as tmp:
        folder = Path(tmp)
        holdout.to_parquet(folder / "holdout.parquet", index=False)
        reference.to_parquet(folder / "reference_sample.parquet", index=False)
        mlflow.log_artifact(str(folder / "holdout.parquet"))
        mlflow.log_artifact(str(folder / "reference_sample.parquet"))
        model_dir = model.save(folder / ARTIFACT_KEY)
        if model.model_type == "xgboost":
            mlflow.log_artifact(str(model_dir / "booster.json"), "xgboost")

        typed = signature_frame(holdout.head(1000))
        with warnings.catch_warnings():
            # Integer columns are declared long on purpose (Spark's int/long pass; features are never null).
            warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")
            signature = infer_signature(typed, model.predict_proba(typed))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            # as code, not a pickle: the version holds this file plus native weights (loopline.artifacts)
            python_model=str(Path(__file__).with_name("pyfunc_code.py")),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            signature=signature,
            input_example=typed.head(5),
            pip_requirements=pip_requirements(model.model_type),
            metadata={
                "loopline_model_type": model.model_type,
                "loopline_threshold": threshold,
                "loopline_format": "native-v1",
            },
        )
    return info.model_uri


def write_result(result: dict[str, Any], path: str | None) -> str:
    """The result as one JSON line (NaN -> null); also written to ``path`` when given."""
    text = json.dumps(json_safe(result), sort_keys=True)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    return text
