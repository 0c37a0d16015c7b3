"""Report a task's inputs and outputs to OpenLineage (the openlineage provider's public API).

TaskFlow tasks get run events from the provider but no datasets: a task calls :func:`report_lineage` with the
:mod:`loopline.lineage` datasets it read and wrote, and the provider emits them as a RUNNING event of the
task's own OpenLineage run (same run id as its START and COMPLETE events), through whatever transport Airflow
is configured with. Lineage never fails a task: an error building or sending the event is logged (and counted
in :data:`FAILURES` for this process), and the task goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from loopline.config import get_config
from loopline.lineage import LineageDataset

log = logging.getLogger(__name__)
FAILURES = {"count": 0}


def _ol(dataset: LineageDataset, kind: str):
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset

    facets = {}
    if dataset.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=dataset.version)
    cls = InputDataset if kind == "input" else OutputDataset
    return cls(namespace=dataset.namespace, name=dataset.name, facets=facets)


def report_lineage(inputs: Iterable[LineageDataset] = (), outputs: Iterable[LineageDataset] = ()) -> bool:
    """Emit the running task's ``inputs`` and ``outputs``; True when handed to the transport, else False."""
    inputs, outputs = list(inputs), list(outputs)
    if not get_config().lineage.enabled or not (inputs or outputs):
        return False
    try:
        from airflow.providers.openlineage.api import emit_dataset_lineage, is_openlineage_active

        if not is_openlineage_active():
            return False
        emit_dataset_lineage(
            inputs=[_ol(d, "input") for d in inputs],
            outputs=[_ol(d, "output") for d in outputs],
            raise_on_error=True,
        )
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


def namespace() -> str:
    """The namespace of Loopline's datasets (``lineage.namespace``)."""
    return get_config().lineage.namespace
