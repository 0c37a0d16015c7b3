"""The tasks before ``ingest_drop`` that fit each input's source (``sources`` in loopline.yaml).

Landing inputs: the marker sensor (:func:`loopline.orchestration.sensors.landing_sensor`). PostgreSQL
inputs: a sensor that waits (rescheduling, no slot held) until the source's watermark closes the day; S3
inputs: the marker sensor on the day's prefix. Then ``extract_sources`` writes the day's drop of each such
input (:func:`loopline.sources.extract_day` through the SQL provider's hook,
:func:`loopline.sources.copy_s3_day` through the amazon provider's); the ingest reads every drop the same way.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from loopline.config import LooplineConfig, get_config
from loopline.landing import KINDS, MARKER
from loopline.orchestration.database import connect
from loopline.orchestration.sensors import _marker_sensor, landing_sensor, waited_seconds


# The DAG's retries cover a lost worker; the timeout fails without retries (AirflowFailException).
@task.sensor(task_id="wait_for_source_day", mode="reschedule")
def wait_for_source_day(kinds: list[str]) -> bool:
    """True once every PostgreSQL source's watermark has passed the end of ``ds`` plus its lateness.

    The last poke before the timeout fails with the source's name and its watermark, rather than Airflow's
    generic "Sensor has timed out"."""
    import datetime as dt

    from loopline.sources import day_state

    cfg = get_config()
    context = get_current_context()
    ds = dt.date.fromisoformat(context["ds"])
    for kind in kinds:
        source = getattr(cfg.sources, kind)
        conn = connect(source.conn_id)
        try:
            state = day_state(conn, source, ds)
        finally:
            conn.close()
        if state.closed:
            continue
        name = f"sources.{kind} ({source.table or 'query'} on connection {source.conn_id})"
        print(f"ds={ds} not closed yet: {state.describe(name)}")
        if waited_seconds(context) >= cfg.validation.sensor_timeout_seconds:
            raise AirflowFailException(
                f"ds={ds} never closed within validation.sensor_timeout_seconds "
                f"({cfg.validation.sensor_timeout_seconds}s): {state.describe(name)}. Check that the source "
                "is still being written (its loader or replication), or its watermark_query"
            )
        return False
    return True


@task(task_id="extract_sources")
def extract_sources(kinds: list[str]) -> dict[str, Any]:
    """Extract ``ds`` of each PostgreSQL or S3 input into its landing drop (replacing the day's drop whole)."""
    import datetime as dt

    from loopline.sources import extract_inputs

    ds = dt.date.fromisoformat(get_current_context()["ds"])
    return extract_inputs(get_config(), ds, connect, kinds)


def wait_for_inputs(cfg: LooplineConfig, lockout: Any = None):
    """The task that ``ingest_drop`` follows: the landing sensor alone, or the sensors that fit each source
    and the extraction that brings PostgreSQL and S3 inputs into the day's landing drop.

    ``lockout``: a task that goes between the waits and the day's first write (the extraction, else the
    ingest), so it checks as late as it can (``feature_pipeline``'s wait for a range backfill holding the day).
    """
    kinds = {kind: getattr(cfg.sources, kind).kind for kind in KINDS}
    if set(kinds.values()) == {"landing"}:
        sensor = landing_sensor(cfg)
        return sensor if lockout is None else sensor >> lockout
    extracted = extract_sources([kind for kind, source in kinds.items() if source != "landing"])
    waits = []
    landing = [kind for kind, source in kinds.items() if source == "landing"]
    if landing:
        waits.append(landing_sensor(cfg, landing))
    postgres = [kind for kind, source in kinds.items() if source == "postgres"]
    if postgres:
        waits.append(
            wait_for_source_day.override(
                poke_interval=cfg.validation.sensor_poke_seconds, timeout=cfg.validation.sensor_timeout_seconds
            )(postgres)
        )
    s3 = [kind for kind, source in kinds.items() if source == "s3"]
    if s3:
        markers = [getattr(cfg.sources, kind).prefix.replace("{ds}", "{{ ds }}") + f"/{MARKER}" for kind in s3]
        waits.append(_marker_sensor(cfg, markers, "wait_for_s3_export", published=False))
    if lockout is not None:
        waits >> lockout
        waits = [lockout]
    waits >> extracted
    return extracted
