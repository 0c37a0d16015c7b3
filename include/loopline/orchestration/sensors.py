"""Waiting for a landing drop or a published lake partition: provider sensors with an actionable timeout.

Which sensor is configuration: a local landing or lake folder uses the standard provider's ``FileSensor``,
``s3://`` the amazon provider's ``S3KeySensor``. Both defer to the triggerer while they
wait (or, with ``validation.sensor_mode: reschedule``, give the slot back between pokes), so a drop that is
late never holds a worker slot.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from loopline.config import LooplineConfig, resolve_uri
from loopline.landing import MARKER

LANDING_FS_CONN_ID = "loopline_landing_fs"


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
    """``FileSensor`` for a local landing folder."""

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


def landing_sensor(cfg: LooplineConfig, kind: str, **kwargs: Any):
    """The sensor for ``<landing>/<kind>/ds={{ ds }}/_SUCCESS`` that fits the configured landing URI."""
    marker = f"{resolve_uri(cfg.storage.landing_uri).rstrip('/')}/{kind}/ds={{{{ ds }}}}/{MARKER}"
    return _marker_sensor(cfg, marker, kwargs.pop("task_id", f"wait_for_{kind}"), published=False, **kwargs)


def published_sensor(cfg: LooplineConfig, table: str, task_id: str, **kwargs: Any):
    """Waits for the day's committed partition of a lake table (its ``_CURRENT`` pointer).

    A partition is committed only after its gate passed, so this is "the day's data is validated", and it
    works the same for scheduled runs, backfills and reruns, whichever DAG run produced the partition.
    """
    from loopline.lake import POINTER

    marker = f"{resolve_uri(cfg.storage.lake_uri).rstrip('/')}/{table}/ds={{{{ ds }}}}/{POINTER}"
    return _marker_sensor(cfg, marker, task_id, published=True, **kwargs)


def _marker_sensor(cfg: LooplineConfig, marker: str, task_id: str, *, published: bool, **kwargs: Any):
    common: dict[str, Any] = {
        "task_id": task_id,
        "deferrable": cfg.validation.sensor_mode == "deferrable",
        "mode": "reschedule",  # used when not deferrable: no worker slot is held between pokes
        "poke_interval": cfg.validation.sensor_poke_seconds,
        "timeout": cfg.validation.sensor_timeout_seconds,
        "retries": 0,  # a timeout is the answer; retrying would only double the wait
        **kwargs,
    }
    if marker.startswith("s3://"):
        # imported only when configured: the amazon provider costs half a second of every DAG parse
        from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

        class MarkerS3Sensor(_NamesMissingPartition if published else _NamesMissingDrop, S3KeySensor):
            """``S3KeySensor`` for a marker object."""

            @property
            def marker_path(self) -> str:  # type: ignore[override]
                return str(self.bucket_key)

        return MarkerS3Sensor(bucket_key=marker, aws_conn_id=cfg.storage.aws_conn_id, **common)
    sensor = PublishedFileSensor if published else LandingFileSensor
    return sensor(filepath=marker, fs_conn_id=LANDING_FS_CONN_ID, **common)
