"""Helpers for tests that point the OpenLineage provider at a transport of their own."""

from __future__ import annotations

import json
from pathlib import Path


def openlineage_conf_reset() -> None:
    """The provider caches its settings per process: read them again (after a test changed the transport)."""
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

    for value in vars(conf).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
    get_openlineage_listener().adapter._client = None  # built again from the transport now configured


def file_transport(events: Path) -> dict[str, str]:
    """The environment ``loopline up`` sets (``stack.lineage_environment``): the file transport, appended."""
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "loopline",
    }
