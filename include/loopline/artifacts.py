"""The one way a registered model version is loaded: digest-verified files, native weights, no code.

A Loopline model version (see :mod:`loopline.training.tracking`) is a folder of plain files: MLflow's
``MLmodel`` (YAML), the pyfunc *code* file, and the trained model under ``artifacts/fraud_model/``:
``meta.json`` (the JSON spec: format version, model kind, input columns, hyper-parameters needed to rebuild
the network, preprocessing) plus the native weights, ``booster.json`` (XGBoost's own JSON format) or
``mlp.pt`` (a torch state dict, read with ``torch.load(..., weights_only=True)``).

:func:`fetch` downloads a version's files into a local folder, hashes every file (SHA-256) and compares them
with the digests recorded in Postgres (``<schema>.model_artifact_digests``) when the version was gated: a
changed, added or missing file raises :class:`ArtifactTampered` naming the model, version and file.
:func:`build` then builds the model from the JSON spec and the native weights; nothing from the store is
executed or unpickled. Versions logged the old way (a cloudpickled pyfunc wrapper) are refused with
:class:`PickledModelRefused` unless ``registry.allow_pickled_models`` is on, because unpickling runs arbitrary
code from the model store.

The gate, batch scoring and shadow scoring all go through here. This module imports neither Airflow nor
(at import time) MLflow; ``conn`` is any DB-API (psycopg2) connection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NATIVE_FORMAT = "native-v1"
MODEL_FOLDER = "artifacts/fraud_model"  # inside the version's folder: meta.json + native weights
SPEC_FILE = f"{MODEL_FOLDER}/meta.json"
WEIGHT_FILES = {"xgboost": "booster.json", "mlp": "mlp.pt"}
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib")
ALLOW_PICKLED_SETTING = "registry.allow_pickled_models"
ALLOW_PICKLED_ENV = "LOOPLINE__REGISTRY__ALLOW_PICKLED_MODELS"
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """A model version's files cannot be loaded safely; nothing from them was executed."""


class ArtifactTampered(ArtifactError):
    """A version's files differ from the digests recorded when it was gated (changed, added or missing file)."""

    def __init__(self, model_name: str, version: int, path: str, problem: str):
        self.model_name, self.version, self.path, self.problem = model_name, version, path, problem
        super().__init__(
            f"model {model_name!r} version {version}: artifact {path!r} {problem} since its digests were recorded "
            "at the gate; refusing to load it (the model store was modified: restore the file or re-train and "
            "gate a new version)"
        )


class DigestsMissing(ArtifactError):
    """The version has no recorded digests, so its files cannot be verified (it never passed the gate)."""


class PickledModelRefused(ArtifactError):
    """The version is a pickled pyfunc and ``registry.allow_pickled_models`` is off."""


class UnknownModelFormat(ArtifactError):
    """The version's folder is neither a native Loopline model nor a pickled pyfunc."""


@dataclass(frozen=True)
class FetchedVersion:
    """A version's files in a local folder, hashed and (when digests were recorded) verified."""

    model_name: str
    version: int
    folder: Path
    digests: dict[str, str]
    verified: bool  # True: matched recorded digests; False: nothing was recorded yet (see record_digests)
    pickled: bool

    @property
    def model_folder(self) -> Path:
        return self.folder / MODEL_FOLDER


# ---------------------------------------------------------------------------------------------------------
# Digests


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_tree(folder: Path) -> dict[str, str]:
    """``{relative POSIX path: sha256}`` of every file under ``folder``; links and special files are refused."""
    folder = Path(folder)
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise ArtifactError(f"{relative!r} is a symbolic link: model artifacts must be plain files")
        if path.is_dir():
            continue
        if not path.is_file():
            raise ArtifactError(f"{relative!r} is not a plain file")
        out[relative] = sha256_file(path)
    return out


def _table(schema: str) -> str:
    from loopline.db import _IDENTIFIER

    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain identifier")
    return f"{schema}.model_artifact_digests"


def recorded_digests(conn: Any, schema: str, model_name: str, version: int) -> dict[str, str]:
    """The digests recorded for the version (empty when none were)."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT path, sha256 FROM {_table(schema)} WHERE model_name = %s AND version = %s",  # noqa: S608
            (model_name, int(version)),
        )
        return {path: sha256 for path, sha256 in cur.fetchall()}


def record_digests(conn: Any, schema: str, model_name: str, version: int, digests: Mapping[str, str]) -> None:
    """Insert the version's digests (existing rows are kept: a version's recorded files never change).

    Does not commit: the caller commits, with the alias history row in the same transaction.
    """
    with conn.cursor() as cur:
        for path, sha256 in sorted(digests.items()):
            cur.execute(
                f"INSERT INTO {_table(schema)} (model_name, version, path, sha256) "  # noqa: S608
                "VALUES (%s, %s, %s, %s) ON CONFLICT (model_name, version, path) DO NOTHING",
                (model_name, int(version), path, sha256),
            )


def verify(model_name: str, version: int, actual: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Raise :class:`ArtifactTampered` for the first changed, added or missing file (sorted by path)."""
    for path in sorted(set(actual) | set(expected)):
        if path not in actual:
            raise ArtifactTampered(model_name, version, path, "is missing")
        if path not in expected:
            raise ArtifactTampered(model_name, version, path, "was added")
        if actual[path] != expected[path]:
            raise ArtifactTampered(
                model_name, version, path, f"changed (sha256 {actual[path][:12]}…, recorded {expected[path][:12]}…)"
            )


# ---------------------------------------------------------------------------------------------------------
# Fetch and build


def download_version(client: Any, model_name: str, version: int, dst: Path) -> Path:
    """Download the version's artifact folder into ``dst``; returns the local folder (no file is executed)."""
    import mlflow.artifacts

    uri = client.get_model_version_download_uri(model_name, str(version))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=client.tracking_uri)
    return Path(local)


def read_mlmodel(folder: Path) -> dict[str, Any]:
    """The ``MLmodel`` file as data (``yaml.safe_load``: no Python objects are constructed)."""
    path = Path(folder) / "MLmodel"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def is_pickled(folder: Path, digests: Mapping[str, str] | None = None) -> bool:
    """Whether loading the version the MLflow way would unpickle something (a cloudpickled pyfunc, a pickle file)."""
    names = digests.keys() if digests is not None else [p.name for p in Path(folder).rglob("*")]
    if any(str(name).lower().endswith(PICKLE_SUFFIXES) for name in names):
        return True
    pyfunc = (read_mlmodel(folder).get("flavors") or {}).get("python_function") or {}
    return "python_model" in pyfunc


def is_native(folder: Path) -> bool:
    """A Loopline model logged as code + native weights (``metadata.loopline_format`` and the JSON spec)."""
    meta = read_mlmodel(folder).get("metadata") or {}
    return meta.get("loopline_format") == NATIVE_FORMAT and (Path(folder) / SPEC_FILE).is_file()


def fetch(
    client: Any,
    model_name: str,
    version: int,
    dst: Path,
    *,
    conn: Any | None,
    schema: str | None,
    require_digests: bool = True,
) -> FetchedVersion:
    """Download, hash and verify the version's files.

    With recorded digests, any difference raises :class:`ArtifactTampered`. Without any, ``require_digests``
    (scoring, and the gate for the champion) raises :class:`DigestsMissing`; the gate passes ``False`` for its
    candidate only and records them itself. ``conn`` None (no predictions database, e.g. a benchmark) verifies
    nothing and needs ``require_digests=False``.
    """
    folder = download_version(client, model_name, version, dst)
    digests = digest_tree(folder)
    verified = False
    if conn is not None and schema is not None:
        expected = recorded_digests(conn, schema, model_name, version)
        if expected:
            verify(model_name, version, digests, expected)
            verified = True
        elif require_digests:
            raise DigestsMissing(
                f"model {model_name!r} version {version} has no recorded artifact digests in "
                f"{schema}.model_artifact_digests, so its files cannot be verified: only versions that passed the "
                "gate are loaded (gate it through train_model, or record the digests of a version you trust with "
                "`loopline model record-digests`)"
            )
    elif require_digests:
        raise DigestsMissing(f"model {model_name!r} version {version}: no predictions database to verify digests")
    return FetchedVersion(model_name, int(version), folder, digests, verified, is_pickled(folder, digests))


def build(fetched: FetchedVersion, *, allow_pickled: bool = False) -> Any:
    """The model of a fetched version: a :class:`~loopline.training.models.FraudModel` built from the JSON spec
    and the native weights, or (only with ``allow_pickled``) a pickled pyfunc loaded the MLflow way."""
    if not fetched.pickled and is_native(fetched.folder):
        return load_native(fetched.model_folder)
    where = f"model {fetched.model_name!r} version {fetched.version}"
    if fetched.pickled:
        if not allow_pickled:
            raise PickledModelRefused(
                f"{where} is a pickled (cloudpickle) pyfunc: loading it would unpickle, which runs arbitrary code "
                f"from the model store. Refused because {ALLOW_PICKLED_SETTING} is false; re-train it (new models "
                f"are logged as code plus native weights), or set {ALLOW_PICKLED_SETTING}: true "
                f"({ALLOW_PICKLED_ENV}=true) only for a version you trust"
            )
        return load_pickled(fetched.folder)
    raise UnknownModelFormat(
        f"{where} is not a Loopline model logged as code plus native weights (no metadata.loopline_format "
        f"{NATIVE_FORMAT!r} in MLmodel or no {SPEC_FILE})"
    )


def load_native(model_folder: Path) -> Any:
    """A FraudModel from ``meta.json`` + ``booster.json`` / ``mlp.pt`` (only the files the spec names are read)."""
    from loopline.training.models import load_model

    spec = json.loads((Path(model_folder) / "meta.json").read_text(encoding="utf-8"))
    kind = spec.get("model_type")
    if kind not in WEIGHT_FILES:
        raise ArtifactError(f"unknown model kind {kind!r} in {SPEC_FILE}")
    return load_model(model_folder)  # xgboost Booster.load_model (JSON) or torch.load(weights_only=True)


class PickledModel:
    """An opted-in pickled pyfunc behind the FraudModel scoring interface (``predict_proba``)."""

    def __init__(self, pyfunc: Any):
        self.pyfunc = pyfunc

    def predict_proba(self, frame: Any) -> Any:
        import numpy as np

        return np.asarray(self.pyfunc.predict(frame), dtype=float).reshape(-1)

    @property
    def fraud_model(self) -> Any:
        """The wrapped FraudModel of an old Loopline pyfunc (for packaging), when it has one."""
        inner = getattr(self.pyfunc.unwrap_python_model(), "fraud_model", None)
        if inner is None:
            raise ArtifactError("this pickled pyfunc is not a Loopline model: it cannot be packaged for scoring")
        return inner


def load_pickled(folder: Path) -> PickledModel:
    """UNSAFE (runs code from the store): the old way, only behind ``registry.allow_pickled_models``."""
    import mlflow.pyfunc

    return PickledModel(mlflow.pyfunc.load_model(str(folder)))


def load_version(
    client: Any,
    model_name: str,
    version: int,
    dst: Path,
    *,
    conn: Any | None,
    schema: str | None,
    allow_pickled: bool = False,
    require_digests: bool = True,
) -> tuple[FetchedVersion, Any]:
    """:func:`fetch` then :func:`build`: the verified files and the model built from them."""
    fetched = fetch(client, model_name, version, dst, conn=conn, schema=schema, require_digests=require_digests)
    return fetched, build(fetched, allow_pickled=allow_pickled)
