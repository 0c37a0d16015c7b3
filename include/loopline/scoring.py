"""Batch scoring logic, free of Spark and Airflow: which model scores a day, and how one batch is scored.

* :func:`resolve_model` turns an alias (``champion`` / ``challenger``) into a concrete registered version
  once per run, so a day is scored by one version even if the alias moves while it runs.
* :func:`package_model` verifies that version's files against the digests recorded at the gate and serialises
  its native model folder into bytes that travel with the Spark job (no MLflow access needed on executors);
  :func:`load_packaged` builds the model from them (JSON spec + native weights, no pickle) once per worker.
* :func:`score_batch` scores a pandas batch: calibrated probability, decision at the threshold and, for the
  rows that need them (flagged ones by default), the top reason codes with the method that produced them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
SHADOW_ALIAS = "shadow"
FLAG = "flag"
PASS = "pass"  # noqa: S105 - a decision, not a password
EXPLAIN_POLICIES = ("flagged", "all", "none")
# The columns a scored batch has, in order (Spark's mapInPandas schema and the Postgres load use them).
SCORE_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "customer_id",
    "merchant_id",
    "event_time",
    "amount_eur",
    "score",
    "decision",
    "reasons",
    "reason_method",
)
SCORE_SCHEMA = (
    "transaction_id string, customer_id string, merchant_id string, event_time timestamp, amount_eur double, "
    "score double, decision string, reasons string, reason_method string"
)


class NoModel(LookupError):
    """The registry has no version behind the requested alias."""


@dataclass(frozen=True)
class ModelRef:
    """One concrete registered model version (what an alias pointed to when the run resolved it)."""

    name: str
    version: int
    run_id: str
    alias: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_model(client: Any, name: str, alias: str) -> ModelRef:
    """The version ``alias`` points to now; raises :class:`NoModel` with what to do when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise NoModel(
            f"registered model {name!r} has no {alias!r} alias: train and gate a model first "
            "(trigger the train_model DAG), then rerun this day"
        ) from exc
    return ModelRef(name=name, version=int(version.version), run_id=version.run_id, alias=alias)


def resolve_version(client: Any, name: str, version: int) -> ModelRef:
    """A version given by number (an operator re-scoring with a specific model)."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise NoModel(f"registered model {name!r} has no version {version}") from exc
    return ModelRef(name=name, version=int(found.version), run_id=found.run_id, alias=f"v{version}")


def package_model(
    ref: ModelRef,
    tracking_uri: str,
    *,
    conn: Any,
    schema: str,
    allow_pickled: bool = False,
) -> bytes:
    """The model folder of ``ref`` (``meta.json`` + native weights) as gzipped tar bytes, digest-verified.

    The version's files are downloaded and checked against the digests recorded when it was gated
    (:func:`loopline.artifacts.fetch`): a changed, added or missing file raises
    :class:`~loopline.artifacts.ArtifactTampered`, a version never gated :class:`~loopline.artifacts.DigestsMissing`,
    a pickled one :class:`~loopline.artifacts.PickledModelRefused` unless ``allow_pickled``. Nothing from the
    store is executed or unpickled; executors rebuild the model from the JSON spec and weights
    (:func:`load_packaged`).
    """
    from loopline import artifacts
    from loopline.training.tracking import mlflow_client

    client = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="loopline-score-") as tmp:
        fetched = artifacts.fetch(client, ref.name, ref.version, Path(tmp) / "version", conn=conn, schema=schema)
        if not fetched.pickled and artifacts.is_native(fetched.folder):
            folder = fetched.model_folder
        else:  # refused unless opted in; with the opt-in, the old way (unpickles)
            folder = artifacts.build(fetched, allow_pickled=allow_pickled).fraud_model.save(Path(tmp) / "model")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(folder.iterdir()):
                if not path.is_file() or path.is_symlink():
                    raise artifacts.ArtifactError(f"{ref.uri}: {path.name} in the model folder is not a plain file")
                tar.add(path, arcname=path.name)
    return buffer.getvalue()


def packaged_decision(blob: bytes) -> dict[str, Any] | None:
    """The threshold decision recorded in a packaged model's ``meta.json`` (None for a model without one)."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        try:
            member = tar.getmember("meta.json")
        except KeyError:
            return None
        handle = tar.extractfile(member)
        meta = json.loads(handle.read()) if handle is not None else {}
    decision = meta.get("decision")
    return decision if isinstance(decision, dict) and "threshold" in decision else None


def version_threshold(decision: dict[str, Any] | None, fallback: float) -> float:
    """The version's own threshold when it recorded one, else ``fallback`` (``scoring.threshold``)."""
    return float(decision["threshold"]) if decision else float(fallback)


_LOADED: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_packaged(blob: bytes, threads: int | None = None):
    """The :class:`~loopline.training.models.FraudModel` in ``blob``, loaded once per process (cached by hash)."""
    from loopline.training.models import load_model

    key = hashlib.sha256(blob).hexdigest()
    with _LOCK:
        model = _LOADED.get(key)
        if model is None:
            with tempfile.TemporaryDirectory(prefix="loopline-model-") as tmp:
                with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                    tar.extractall(tmp, filter="data")
                model = load_model(tmp)
            if threads and model.model_type == "xgboost":
                model.booster.set_param({"nthread": threads})
            elif threads:
                import torch

                torch.set_num_threads(threads)
            _LOADED[key] = model
    return model


def top_reasons(contributions: pd.DataFrame, features: pd.DataFrame, k: int) -> list[str]:
    """Per row, the ``k`` features that push the score up most, as JSON: feature, value, contribution."""
    names = np.asarray(contributions.columns)
    values = contributions.to_numpy(dtype=np.float64)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    columns = {name: features[name].to_numpy() for name in names}
    out = []
    for row, picks in enumerate(order):
        reasons = []
        for column in picks:
            contribution = values[row, column]
            if contribution <= 0:
                break  # only what raised the score is a reason
            value = columns[names[column]][row]
            reasons.append(
                {"feature": str(names[column]), "value": _json_value(value), "contribution": round(contribution, 6)}
            )
        out.append(json.dumps(reasons))
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_batch(
    model: Any,
    batch: pd.DataFrame,
    *,
    threshold: float,
    explain: str = "flagged",
    reason_codes: int = 3,
    method: str = "exact",
) -> pd.DataFrame:
    """Score one batch of feature rows: :data:`SCORE_COLUMNS` with reasons for the rows ``explain`` selects."""
    if explain not in EXPLAIN_POLICIES:
        raise ValueError(f"scoring.explain must be one of {EXPLAIN_POLICIES}, not {explain!r}")
    score = model.predict_proba(batch) if len(batch) else np.zeros(0)
    flagged = score >= threshold
    # Carried columns as they are (copying a tz-aware time column through numpy costs more than the model).
    out = batch[["transaction_id", "customer_id", "merchant_id", "event_time", "amount_eur"]].reset_index(drop=True)
    out["amount_eur"] = out["amount_eur"].astype(np.float64)
    out["score"] = score.astype(np.float64)
    out["decision"] = np.where(flagged, FLAG, PASS)
    out["reasons"] = pd.Series([None] * len(batch), dtype=object)
    out["reason_method"] = pd.Series([None] * len(batch), dtype=object)
    wanted = {"flagged": flagged, "all": np.ones(len(batch), dtype=bool), "none": np.zeros(len(batch), dtype=bool)}
    rows = np.flatnonzero(wanted[explain]) if reason_codes > 0 else np.zeros(0, dtype=int)
    if len(rows):
        subset = batch.iloc[rows]
        explanation = model.explain(subset, method)
        out.loc[rows, "reasons"] = top_reasons(explanation.contributions, subset, reason_codes)
        out.loc[rows, "reason_method"] = explanation.method
    return out


def score_arrow_batch(
    model: Any,
    batch: Any,
    *,
    threshold: float,
    explain: str = "flagged",
    reason_codes: int = 3,
    method: str = "exact",
) -> Any:
    """:func:`score_batch` on a ``pyarrow.RecordBatch`` (Spark's ``mapInArrow``), with the same values.

    The carried id/time/amount columns stay Arrow arrays (no Python string objects, no tz-aware time
    round trip); only the model's input columns are converted to pandas, and reasons are built for the
    rows ``explain`` selects only (null elsewhere). Returns a record batch of :data:`SCORE_COLUMNS`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from loopline.training.models import INPUT_COLUMNS

    if explain not in EXPLAIN_POLICIES:
        raise ValueError(f"scoring.explain must be one of {EXPLAIN_POLICIES}, not {explain!r}")
    n = batch.num_rows
    inputs = batch.select(list(INPUT_COLUMNS)).to_pandas()
    score = np.asarray(model.predict_proba(inputs), dtype=np.float64) if n else np.zeros(0)
    flagged = score >= threshold
    wanted = {"flagged": flagged, "all": np.ones(n, dtype=bool), "none": np.zeros(n, dtype=bool)}
    rows = np.flatnonzero(wanted[explain]) if reason_codes > 0 else np.zeros(0, dtype=int)
    if len(rows):
        subset = inputs.iloc[rows]
        explanation = model.explain(subset, method)
        reasons = np.full(n, None, dtype=object)
        methods = np.full(n, None, dtype=object)
        reasons[rows] = top_reasons(explanation.contributions, subset, reason_codes)
        methods[rows] = explanation.method
        reasons_array, methods_array = pa.array(reasons, pa.string()), pa.array(methods, pa.string())
    else:
        reasons_array = methods_array = pa.nulls(n, pa.string())
    amount = batch.column("amount_eur")
    carried = [batch.column(name) for name in SCORE_COLUMNS[:4]]
    return pa.RecordBatch.from_arrays(
        [
            *carried,
            amount if amount.type == pa.float64() else pc.cast(amount, pa.float64()),
            pa.array(score, pa.float64()),
            pc.if_else(pa.array(flagged, pa.bool_()), FLAG, PASS),
            reasons_array,
            methods_array,
        ],
        names=list(SCORE_COLUMNS),
    )
