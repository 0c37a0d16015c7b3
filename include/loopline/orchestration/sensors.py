"""Waiting for a landing drop: the provider's file or S3 sensor, deferrable, with an actionable timeout.

Which sensor is configuration: ``storage.landing_uri`` on a local folder uses the standard provider's
``FileSensor``, on ``s3://`` the amazon provider's ``S3KeySensor``. Both defer to the triggerer while they
wait (or, with ``validation.sensor_mode: reschedule``, give the slot back between pokes), so a drop that is
late never holds a worker slot.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowSensorTimeout

from loopline.config import LooplineConfig, resolve_uri
from loopline.landing import MARKER

LANDING_FS_CONN_ID = "loopline_landing_fs"


class _NamesMissingDrop:
    """Turns a bare sensor timeout into a message naming the missing marker and what to do."""

    marker_path: str
    timeout: float

    def _explain(self, exc: AirflowSensorTimeout) -> AirflowSensorTimeout:
        return AirflowSensorTimeout(
            f"landing drop incomplete: {self.marker_path} did not appear within "
            f"{timedelta(seconds=int(self.timeout))}. The upstream export writes {MARKER} last, once the day's "
            "files are complete: check the upstream job for this day, then clear this task to wait again. "
            f"({exc})"
        )

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)  # type: ignore[misc]
        except AirflowSensorTimeout as exc:
            raise self._explain(exc) from exc

    def resume_execution(self, next_method: str, next_kwargs: dict | None, context: Any) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]
        except AirflowSensorTimeout as exc:
            raise self._explain(exc) from exc


class LandingFileSensor(_NamesMissingDrop, FileSensor):
    """``FileSensor`` for a local landing folder."""

    @property
    def marker_path(self) -> str:  # type: ignore[override]
        return self.filepath


def landing_sensor(cfg: LooplineConfig, kind: str, **kwargs: Any):
    """The sensor for ``<landing>/<kind>/ds={{ ds }}/_SUCCESS`` that fits the configured landing URI."""
    marker = f"{resolve_uri(cfg.storage.landing_uri).rstrip('/')}/{kind}/ds={{{{ ds }}}}/{MARKER}"
    common: dict[str, Any] = {
        "task_id": f"wait_for_{kind}",
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

        class LandingS3Sensor(_NamesMissingDrop, S3KeySensor):
            """``S3KeySensor`` for an S3 landing prefix."""

            @property
            def marker_path(self) -> str:  # type: ignore[override]
                return str(self.bucket_key)

        return LandingS3Sensor(bucket_key=marker, aws_conn_id=cfg.storage.aws_conn_id, **common)
    return LandingFileSensor(filepath=marker, fs_conn_id=LANDING_FS_CONN_ID, **common)
