"""Sections of the services Loopline runs on: storage, Spark, PostgreSQL, MLflow and lineage."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from loopline.config.base import _IDENTIFIER, _Section


class StorageConfig(_Section):
    landing_uri: str
    """Where landing drops arrive: a folder (relative paths resolve under the Loopline home) or ``s3://bucket/prefix``.
    """
    lake_uri: str
    """The Parquet lake (``raw/``, ``quarantine/``, ``features/``, ``aggregates/``, ``state/``, ``scores/``): a folder
    or ``s3a://`` URI.
    """
    reports_uri: str
    """Where rendered validation (Data Docs) and drift reports are written."""
    reports_url: str
    """Where browsers find ``reports_uri``: served by the Loopline Airflow plugin locally, an https URL in front of the
    reports bucket in production.
    """
    aws_conn_id: str
    """Airflow connection used whenever a URI is ``s3://`` (its extra names the endpoint)."""
    stage_uri: str | None = None
    """A folder every Spark executor sees, where an object-store landing drop is copied before Spark reads it; None:
    Spark reads the object store itself (s3a, needs hadoop-aws in the Spark image).
    """

    @field_validator("stage_uri")
    @classmethod
    def _stage_is_a_folder(cls, value: str | None) -> str | None:
        if value and "://" in value and not value.startswith("file://"):
            raise ValueError("a folder (a path or file://), not an object-store URI: Spark reads the copies there")
        return value


class SparkConfig(_Section):
    conn_id: str
    """Airflow connection of the Spark cluster: type ``spark_connect`` (default) or ``spark`` (a master URL; the task
    functions run as a driver).
    """
    connect_url: str
    """Address (host and port) of the local Spark Connect server that ``loopline up`` starts."""
    pool: str
    """Airflow pool that bounds concurrent Spark tasks."""
    pool_slots: int = Field(ge=1)
    """Slots of the Spark pool: Spark tasks that may run at once."""
    driver_memory: str
    """Driver memory of the local Spark Connect server (JVM size, e.g. ``2g``)."""
    shuffle_partitions: int = Field(ge=1)
    """``spark.sql.shuffle.partitions`` of the local Spark Connect server."""
    server_conf: dict[str, str | bool | int | float] = Field(default_factory=dict)
    """Extra properties of the Spark Connect server that ``loopline up`` starts (not of a cluster's)."""


class PostgresConfig(_Section):
    conn_id: str
    """Airflow connection of the predictions database (the analysts' tables); tasks log in as ``loader_role``."""
    schema_: str = Field(alias="schema")
    """Schema of the analysts' tables and views."""
    owner_role: str = "loopline_owner"
    """Role that owns the schema and runs the migrations (``loopline up`` / ``loopline migrate``)."""
    loader_role: str = "loopline_loader"
    """Role the Airflow tasks log in as: DML on the schema's tables, no DDL."""
    analyst_role: str = "loopline_analyst"
    """Read-only role on the analyst-facing tables and views (BI tools, the model-health page)."""
    owner_conn_id: str = "loopline_postgres_owner"
    """Airflow connection that logs in as the owner, for ``loopline migrate`` against a database the stack did not start
    (compose, a managed Postgres).
    """
    search_schema: str = "loopline_search"
    """Schema of Optuna's study tables (``training.search``): the loader may create tables here, and only here, so the
    analysts' schema stays DDL-free.
    """
    analyst_conn_id: str = "loopline_postgres_analyst"
    """Airflow connection that logs in as the analyst (read-only); the model-health page beside the UI reads with it."""

    @field_validator("schema_", "owner_role", "loader_role", "analyst_role", "search_schema")
    @classmethod
    def _identifier(cls, value: str) -> str:
        # Schema and role names are interpolated into DDL as identifiers, so only plain identifiers pass.
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a plain lower-case SQL identifier")
        return value

    @model_validator(mode="after")
    def _distinct_roles(self) -> PostgresConfig:
        if len({self.owner_role, self.loader_role, self.analyst_role}) != 3:
            raise ValueError("owner_role, loader_role and analyst_role must be three different roles")
        if self.search_schema == self.schema_:
            raise ValueError("search_schema must differ from schema: the loader may create tables in it")
        return self


class MlflowConfig(_Section):
    tracking_uri: str
    """MLflow tracking URI used when the ``conn_id`` connection does not exist (relative SQLite paths resolve under the
    Loopline home).
    """
    artifact_uri: str
    """Artifact root of the local tracking store (a folder or an object-store URI)."""
    experiment: str
    """MLflow experiment of the training runs."""
    registered_model: str
    """Registered model name whose aliases (``champion``, ``challenger``, ``shadow``) the loop moves."""
    ui_url: str
    """Base URL of the MLflow UI, for the extra links in the Airflow UI."""
    conn_id: str = "loopline_mlflow"
    """Airflow connection (type http) of a tracking server with basic auth; when it exists, tasks use its URL, login and
    password instead of ``tracking_uri``.
    """


class LineageConfig(_Section):
    """OpenLineage: the dataset namespace Loopline's events use, and the local event file.

    Where events go is Airflow's own setting (``[openlineage] transport``): the local stack writes them to
    ``events_file`` (file transport, no server); production sets an HTTP transport in its environment.
    """

    enabled: bool = True
    """Emit OpenLineage events; off, the stack turns the provider off."""
    namespace: str = Field(default="loopline", min_length=1)
    """Namespace of every Loopline dataset (landing, lake, analyst tables, models)."""
    events_file: str = "lineage/events.jsonl"
    """The local stack's file transport (JSON lines); production sets an HTTP transport in Airflow's ``[openlineage]
    transport``.
    """
