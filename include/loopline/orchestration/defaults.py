"""Defaults every Loopline DAG shares: owner, retries, tags vocabulary and the doc_md layout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from loopline.config import get_config
from loopline.orchestration.alerts import LooplineNotifier

OWNER = "loopline-data-platform"

# The one tag vocabulary. DAG integrity tests fail on any tag outside it.
TAGS = frozenset(
    {
        "loopline",
        "features",
        "ingestion",
        "validation",
        "training",
        "registry",
        "scoring",
        "monitoring",
        "spark",
        "gpu",
        "backfillable",
    }
)

_RETRY = get_config().retry  # a local YAML read: no network, no Airflow Variables
DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": _RETRY.retries,
    "retry_delay": timedelta(seconds=_RETRY.delay_seconds),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(seconds=_RETRY.max_delay_seconds),
    # Called once a task's last try failed (retries exhausted): one alert on every channel of alerts.channels.
    "on_failure_callback": [LooplineNotifier("failure")],
}

# Every DAG's doc_md carries these sections, so triage always starts from the same place.
DOC_SECTIONS = ("## What it does", "## Inputs", "## Outputs", "## Owner", "## Triage")


def tags(*names: str) -> list[str]:
    """Tags for a DAG, checked against the vocabulary at parse time (a typo fails the DagBag)."""
    unknown = sorted(set(names) - TAGS)
    if unknown:
        raise ValueError(f"unknown DAG tags {unknown}; allowed: {sorted(TAGS)}")
    return ["loopline", *sorted(set(names) - {"loopline"})]
