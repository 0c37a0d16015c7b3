"""Typed configuration for Loopline.

One versioned YAML file (``loopline.yaml`` beside this module, or the file named by ``LOOPLINE_CONFIG``)
is validated into :class:`LooplineConfig`. Unknown keys and wrong types fail with a message naming the
key. Deployment values are overridden by ``LOOPLINE__<SECTION>__<KEY>`` environment variables whose
values are parsed as YAML scalars, so ``LOOPLINE__GATE__MIN_IMPROVEMENT=0.01`` is a float.

The model is split by concern: :mod:`~loopline.config.base` (the section base model, :class:`ConfigError`),
:mod:`~loopline.config.sections_services` (storage, Spark, PostgreSQL, MLflow, lineage),
:mod:`~loopline.config.sections_data` (features, FX, reference data, sources, validation, backfills),
:mod:`~loopline.config.sections_training` (Kubernetes, search, training, slices, gate, registry, promotion) and
:mod:`~loopline.config.sections_monitoring` (retries, thresholds, scoring, drift, alerts); this module holds
:class:`LooplineConfig` and the loader. Every name is importable from ``loopline.config``.
The section classes' attribute docstrings are the keys' descriptions (``use_attribute_docstrings``): the
configuration reference of the documentation is generated from them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from loopline.config.base import ConfigError, _Section
from loopline.config.sections_data import (
    MAX_DAY_WINDOW,
    MAX_HOUR_WINDOW,
    BackfillConfig,
    FeaturesConfig,
    FxConfig,
    LandingSource,
    PostgresSource,
    ReferenceConfig,
    S3Source,
    SourcesConfig,
    ValidationConfig,
)
from loopline.config.sections_monitoring import (
    AlertChannel,
    AlertsConfig,
    DriftConfig,
    FileChannel,
    LatenessConfig,
    LogChannel,
    RetryConfig,
    ScoringConfig,
    SegmentCondition,
    SegmentConfig,
    SmtpChannel,
    ThresholdPolicyConfig,
    WebhookChannel,
)
from loopline.config.sections_services import LineageConfig, MlflowConfig, PostgresConfig, SparkConfig, StorageConfig
from loopline.config.sections_training import (
    SCHEDULE_PRESETS,
    SEARCHABLE,
    GateConfig,
    GateSlicesConfig,
    KubernetesConfig,
    PromotionConfig,
    RegistryConfig,
    SearchConfig,
    SearchRange,
    SliceConfig,
    TrainingConfig,
)

DEFAULT_CONFIG = Path(__file__).with_name("loopline.yaml")
ENV_PREFIX = "LOOPLINE__"
SUPPORTED_VERSION = 1


class LooplineConfig(_Section):
    version: int
    """Version of the configuration format (1)."""
    storage: StorageConfig
    """Where landing drops, the lake and the reports live."""
    spark: SparkConfig
    """The Spark cluster and the local Spark Connect server."""
    postgres: PostgresConfig
    """The predictions database: schema, roles and connections."""
    mlflow: MlflowConfig
    """Tracking server, experiment and registered model."""
    features: FeaturesConfig
    """Feature windows and label maturity."""
    validation: ValidationConfig
    """The Great Expectations gates, the landing sensor and the bounds on landing files."""
    training: TrainingConfig
    """The trainer: model, window, runner, search."""
    gate: GateConfig
    """The champion/challenger gate."""
    scoring: ScoringConfig
    """Batch scoring: thresholds and reason codes."""
    drift: DriftConfig
    """The drift monitor: tests, segments, realized performance, the retraining trigger."""
    reference: ReferenceConfig
    """Reference data of the landing contract: what a valid transaction may contain."""
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    """Where each input comes from."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retries of every task whose failure may be transient."""
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    """How model versions are loaded from the registry."""
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    """How a challenger that passed the gate reaches traffic."""
    backfill: BackfillConfig = Field(default_factory=BackfillConfig)
    """Range backfills."""
    alerts: AlertsConfig = Field(default_factory=lambda: AlertsConfig(channels=[FileChannel(type="file")]))
    """Failure, lateness and drift alerts."""
    lineage: LineageConfig = Field(default_factory=LineageConfig)
    """OpenLineage events."""

    @model_validator(mode="after")
    def _slice_columns(self) -> LooplineConfig:
        # checked here, not on the slice: the feature columns depend on this same config's windows
        from loopline.schemas import CATEGORICAL_FEATURES, feature_schema

        known = (*CATEGORICAL_FEATURES, *feature_schema(self.features.windows).numeric)
        for entry in self.gate.slices.by:
            if entry.column not in known:
                raise ValueError(
                    f"gate.slices.by: column {entry.column!r} is not a feature column (one of {', '.join(known)})"
                )
        return self

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise ValueError(f"config version {value} is not supported (expected {SUPPORTED_VERSION})")
        return value

    def resolve(self, uri: str) -> str:
        """Resolve a configured path or URI: URIs with a scheme pass through, paths resolve under home."""
        return resolve_uri(uri)


def repo_root() -> Path:
    """The repository root (the folder holding ``dags/`` and ``include/``)."""
    return Path(__file__).resolve().parents[3]


def loopline_home() -> Path:
    """Where local state lives (lake, landing, services): ``$LOOPLINE_HOME`` or ``<repo>/.loopline``."""
    return Path(os.environ.get("LOOPLINE_HOME") or repo_root() / ".loopline").resolve()


def resolve_uri(uri: str) -> str:
    """``s3://…`` and ``file://…`` style URIs pass through; plain paths resolve against :func:`loopline_home`.

    ``sqlite:///relative.db`` becomes an absolute SQLite URI under home as well.
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{loopline_home() / uri.removeprefix('sqlite:///')}"
    if "://" in uri:
        return uri
    path = Path(uri).expanduser()
    return str(path if path.is_absolute() else loopline_home() / path)


def _set_path(tree: dict[str, Any], keys: list[str], value: Any, source: str) -> None:
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: unknown config key {'.'.join(keys[: depth + 1])!r}")
        node = node[key]
    if not isinstance(node, dict) or keys[-1] not in node:
        raise ConfigError(f"{source}: unknown config key {'.'.join(keys)!r}")
    node[keys[-1]] = value


def apply_env_overrides(tree: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Apply ``LOOPLINE__SECTION__KEY=value`` overrides to the raw tree (values parsed as YAML)."""
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name.removeprefix(ENV_PREFIX).split("__")]
        _set_path(tree, keys, yaml.safe_load(environ[name]), source=f"environment variable {name}")
    return tree


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]).replace("schema_", "schema")
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (remove it or check its spelling)")
        elif item["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return f"invalid Loopline config {source}:\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> LooplineConfig:
    """Read, override and validate the configuration.

    ``path`` defaults to ``$LOOPLINE_CONFIG`` or the packaged ``loopline.yaml``; ``environ`` defaults to
    ``os.environ``. Raises :class:`ConfigError` naming every offending key.
    """
    environ = dict(os.environ) if environ is None else environ
    source = Path(path or environ.get("LOOPLINE_CONFIG") or DEFAULT_CONFIG)
    try:
        tree = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Loopline config file not found: {source}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"Loopline config {source} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"Loopline config {source} must be a mapping of sections")
    apply_env_overrides(tree, environ)
    try:
        return LooplineConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(source))) from None


@lru_cache(maxsize=1)
def get_config() -> LooplineConfig:
    """The process-wide configuration (cached; tests call ``get_config.cache_clear()``)."""
    return load_config()


__all__ = [
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "MAX_DAY_WINDOW",
    "MAX_HOUR_WINDOW",
    "SCHEDULE_PRESETS",
    "SEARCHABLE",
    "SUPPORTED_VERSION",
    "AlertChannel",
    "AlertsConfig",
    "BackfillConfig",
    "ConfigError",
    "DriftConfig",
    "FeaturesConfig",
    "FileChannel",
    "FxConfig",
    "GateConfig",
    "GateSlicesConfig",
    "KubernetesConfig",
    "LandingSource",
    "LatenessConfig",
    "LineageConfig",
    "LogChannel",
    "LooplineConfig",
    "MlflowConfig",
    "PostgresConfig",
    "PostgresSource",
    "PromotionConfig",
    "ReferenceConfig",
    "RegistryConfig",
    "RetryConfig",
    "S3Source",
    "ScoringConfig",
    "SearchConfig",
    "SearchRange",
    "SegmentCondition",
    "SegmentConfig",
    "SliceConfig",
    "SmtpChannel",
    "SourcesConfig",
    "SparkConfig",
    "StorageConfig",
    "ThresholdPolicyConfig",
    "TrainingConfig",
    "ValidationConfig",
    "WebhookChannel",
    "apply_env_overrides",
    "get_config",
    "load_config",
    "loopline_home",
    "repo_root",
    "resolve_uri",
]
