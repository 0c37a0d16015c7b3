"""Report a task's inputs and outputs to OpenLineage (the openlineage provider's public API).

TaskFlow tasks get run events from the provider but no datasets: a task calls :func:`report_lineage` with the
:mod:`loopline.lineage` datasets it read and wrote, and the provider emits them as a RUNNING event of the
task's own OpenLineage run (same run id as its START and COMPLETE events), through whatever transport Airflow
is configured with.

A task that does the work of several daily steps for several days (the range backfill) reports each day's
steps inside :func:`day_scope`: there each :func:`report_lineage` call becomes a child run of the task's run
(``parentRun`` facet), one per day and step, named like the daily task (``<dag>.<task>.<step>``), so the day's
edges (landing -> raw -> features) are not mixed with the other days' of the same task run. Lineage never
fails a task: an error building or sending the event is logged (and counted
in :data:`FAILURES` for this process), and the task goes on.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Iterator

from loopline.config import get_config
from loopline.lineage import LineageDataset

log = logging.getLogger(__name__)
FAILURES = {"count": 0}
_DAY: contextvars.ContextVar[str | None] = contextvars.ContextVar("loopline_lineage_day", default=None)


@contextlib.contextmanager
def day_scope(ds: str) -> Iterator[None]:
    """Within: :func:`report_lineage` emits a child run per step of day ``ds`` (see the module's docstring)."""
    token = _DAY.set(str(ds))
    try:
        yield
    finally:
        _DAY.reset(token)


def _ol(dataset: LineageDataset, kind: str):
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset

    facets = {}
    if dataset.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=dataset.version)
    cls = InputDataset if kind == "input" else OutputDataset
    return cls(namespace=dataset.namespace, name=dataset.name, facets=facets)


def report_lineage(
    inputs: Iterable[LineageDataset] = (), outputs: Iterable[LineageDataset] = (), *, step: str = "step"
) -> bool:
    """Emit the running task's ``inputs`` and ``outputs``; True when handed to the transport, else False.

    ``step`` names the daily task whose work this is (``ingest_drop``, ``publish_raw``, ...): used only inside
    :func:`day_scope`, where the datasets go to a child run ``<dag>.<task>.<step>`` of that day."""
    inputs, outputs = list(inputs), list(outputs)
    if not get_config().lineage.enabled or not (inputs or outputs):
        return False
    try:
        from airflow.providers.openlineage.api import emit_dataset_lineage, is_openlineage_active

        if not is_openlineage_active():
            return False
        ol_inputs = [_ol(d, "input") for d in inputs]
        ol_outputs = [_ol(d, "output") for d in outputs]
        day = _DAY.get()
        if day is None:
            emit_dataset_lineage(inputs=ol_inputs, outputs=ol_outputs, raise_on_error=True)
        else:
            _emit_child(day, step, ol_inputs, ol_outputs)
    except Exception as exc:  # lineage is best effort: the task's own work has succeeded
        FAILURES["count"] += 1
        log.warning(
            "lineage not emitted (%d failure(s) in this process): %s: %s; the task goes on",
            FAILURES["count"],
            type(exc).__name__,
            exc,
        )
        return False
    log.info("lineage: %d input(s) -> %d output(s)", len(inputs), len(outputs))
    return True


def _emit_child(day: str, step: str, inputs: list, outputs: list) -> None:
    """One COMPLETE event of a child run of the running task's OpenLineage run: day ``day``'s ``step``."""
    from airflow.providers.openlineage.api import emit
    from airflow.providers.openlineage.plugins.macros import lineage_job_name, lineage_job_namespace, lineage_run_id
    from airflow.sdk import get_current_context
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import parent_run

    ti = get_current_context()["ti"]
    parent_id, parent_job, job_namespace = lineage_run_id(ti), lineage_job_name(ti), lineage_job_namespace()
    # Fixed per task try, day and step: a retried emission is the same run, not a second one.
    run_id = str(uuid.uuid5(uuid.UUID(parent_id), f"{day}/{step}"))
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=parent_id), job=parent_run.Job(namespace=job_namespace, name=parent_job)
    )
    emit(
        RunEvent(
            eventType=RunState.COMPLETE,
            eventTime=dt.datetime.now(dt.UTC).isoformat(),
            run=Run(runId=run_id, facets={"parent": parent}),
            job=Job(namespace=job_namespace, name=f"{parent_job}.{step}"),
            inputs=inputs,
            outputs=outputs,
            producer="https://github.com/apache/airflow/tree/providers-openlineage",
        )
    )


def namespace() -> str:
    """The namespace of Loopline's datasets (``lineage.namespace``)."""
    return get_config().lineage.namespace
