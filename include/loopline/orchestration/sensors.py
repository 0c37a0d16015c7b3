"""Waiting for a landing drop or a published lake partition: provider sensors with an actionable timeout.

Which sensor is configuration: a local landing or lake folder (a path or ``file://``) uses the standard
provider's ``FileSensor``, ``s3://`` or ``s3a://`` (Spark's spelling of a lake) the amazon provider's
``S3KeySensor``. Both defer to the triggerer while they wait (or, with ``validation.sensor_mode: reschedule``,
give the slot back between pokes), so a drop that is late never holds a worker slot. A landing drop is
several markers (one per kind) behind one sensor: a task instance costs the scheduler and a worker about a
CPU second whether it waits or not, and a backfilled day has nothing to wait for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from loopline.config import LooplineConfig, resolve_uri
from loopline.landing import KINDS, MARKER

LANDING_FS_CONN_ID = "loopline_landing_fs"
S3_SCHEMES = ("s3://", "s3a://")


def _s3_key(uri: str) -> str:
    """The ``s3://`` form of an object URI, the only one ``S3KeySensor`` parses."""
    return "s3://" + uri.split("://", 1)[1]


def _local_path(uri: str) -> str:
    """A local marker as ``FileSensor`` wants it: a path, not a ``file://`` URI."""
    return uri.removeprefix("file://")


class _NamesMissingDrop:
    """Turns a bare sensor timeout into a message naming the missing marker and what to do."""

    marker_path: str
    timeout: float
    _what = "landing drop incomplete"

    def _advice(self) -> str:
        return (
            f"The upstream export writes {MARKER} last, once the day's files are complete: check the upstream "
            "job for this day, then clear this task to wait again."
        )

    def _explain(self, exc: Exception) -> AirflowSensorTimeout:
        return AirflowSensorTimeout(
            f"{self._what}: {self.marker_path} did not appear within {timedelta(seconds=int(self.timeout))}. "
            f"{self._advice()} ({exc})"
        )

    def _skip(self, exc: AirflowSkipException) -> AirflowSkipException:
        # soft_fail turns the timeout into a skip: keep the explanation, it is the run's only message
        return AirflowSkipException(f"{self._explain(exc)} Skipped (soft_fail): nothing to do without it.")

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)  # type: ignore[misc]
        except AirflowSensorTimeout as exc:
            raise self._explain(exc) from exc
        except AirflowSkipException as exc:
            if not getattr(self, "soft_fail", False):
                raise
            raise self._skip(exc) from exc

    def resume_execution(self, next_method: str, next_kwargs: dict | None, context: Any) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]
        except AirflowSensorTimeout as exc:
            raise self._explain(exc) from exc
        except AirflowSkipException as exc:
            if not getattr(self, "soft_fail", False):
                raise
            raise self._skip(exc) from exc


class LandingFileSensor(_NamesMissingDrop, FileSensor):
    """``FileSensor`` over every marker of a local landing drop: done when all exist.

    ``filepath`` is the first missing marker: the one a deferral waits for and a timeout names. When it
    appears, the sensor checks the others again and defers on the next missing one, if any.
    """

    template_fields: Sequence[str] = (*FileSensor.template_fields, "markers")

    def __init__(self, *, markers: Sequence[str], **kwargs: Any) -> None:
        if not markers:
            raise ValueError("LandingFileSensor needs at least one marker")
        super().__init__(filepath=markers[0], **kwargs)
        self.markers = list(markers)

    def _wait_for(self, marker: str) -> None:
        self.filepath = marker
        self.__dict__.pop("path", None)  # FileSensor caches the joined path

    def poke(self, context: Any) -> bool:
        for marker in self.markers:
            self._wait_for(marker)
            if not super().poke(context):
                return False
        return True

    def execute_complete(self, context: Any, event: bool | None = None) -> None:
        super().execute_complete(context, event)
        self.execute(context)  # the other markers: defers again on the next missing one

    @property
    def marker_path(self) -> str:  # type: ignore[override]
        return self.filepath


class _NamesMissingPartition(_NamesMissingDrop):
    _what = "partition not published"

    def _advice(self) -> str:
        return (
            "The pointer is written only after the partition passed its validation gate: check the producing "
            "DAG's run for this day (feature_pipeline for features), fix or rerun it, then clear this task."
        )


class PublishedFileSensor(_NamesMissingPartition, FileSensor):
    """``FileSensor`` on a local lake partition's commit pointer."""

    @property
    def marker_path(self) -> str:  # type: ignore[override]
        return self.filepath


def waited_seconds(context: Any) -> float:
    """Seconds since a rescheduling sensor's first poke (rescheduled pokes keep the first one's date): a
    ``@task.sensor`` compares it with its timeout to fail with its own message rather than Airflow's."""
    from airflow.sdk import timezone

    first = context["ti"].get_first_reschedule_date(context)
    return 0.0 if first is None else (timezone.utcnow() - first).total_seconds()


def landing_sensor(cfg: LooplineConfig, kinds: Sequence[str] = KINDS, **kwargs: Any):
    """One sensor for every ``<landing>/<kind>/ds={{ ds }}/_SUCCESS`` of a drop, fitting the landing URI."""
    root = resolve_uri(cfg.storage.landing_uri).rstrip("/")
    markers = [f"{root}/{kind}/ds={{{{ ds }}}}/{MARKER}" for kind in kinds]
    return _marker_sensor(cfg, markers, kwargs.pop("task_id", "wait_for_drop"), published=False, **kwargs)


def published_sensor(cfg: LooplineConfig, table: str, task_id: str, **kwargs: Any):
    """Waits for the day's committed partition of a lake table (its ``_CURRENT`` pointer).

    A partition is committed only after its gate passed, so this is "the day's data is validated", and it
    works the same for scheduled runs, backfills and reruns, whichever DAG run produced the partition.
    """
    from loopline.lake import POINTER

    marker = f"{resolve_uri(cfg.storage.lake_uri).rstrip('/')}/{table}/ds={{{{ ds }}}}/{POINTER}"
    return _marker_sensor(cfg, [marker], task_id, published=True, **kwargs)


def _marker_sensor(cfg: LooplineConfig, markers: list[str], task_id: str, *, published: bool, **kwargs: Any):
    common: dict[str, Any] = {
        "task_id": task_id,
        "deferrable": cfg.validation.sensor_mode == "deferrable",
        "mode": "reschedule",  # used when not deferrable: no worker slot is held between pokes
        "poke_interval": cfg.validation.sensor_poke_seconds,
        "timeout": cfg.validation.sensor_timeout_seconds,
        # No retries=0: Airflow never retries a sensor's timeout (AirflowSensorTimeout, a deferral's timeout
        # included), and the DAG's retries are what brings a sensor back after a lost worker or triggerer.
        **kwargs,
    }
    if markers[0].startswith(S3_SCHEMES):
        # imported only when configured: the amazon provider costs half a second of every DAG parse
        from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

        class MarkerS3Sensor(_NamesMissingPartition if published else _NamesMissingDrop, S3KeySensor):
            """``S3KeySensor`` for marker objects (it waits for every key of a list)."""

            @property
            def marker_path(self) -> str:  # type: ignore[override]
                keys = [self.bucket_key] if isinstance(self.bucket_key, str) else self.bucket_key
                return " or ".join(keys)

        s3_keys = [_s3_key(marker) for marker in markers]
        keys: str | list[str] = s3_keys[0] if len(s3_keys) == 1 else s3_keys
        return MarkerS3Sensor(bucket_key=keys, aws_conn_id=cfg.storage.aws_conn_id, **common)
    paths = [_local_path(marker) for marker in markers]
    if published:
        (path,) = paths
        return PublishedFileSensor(filepath=path, fs_conn_id=LANDING_FS_CONN_ID, **common)
    return LandingFileSensor(markers=paths, fs_conn_id=LANDING_FS_CONN_ID, **common)
