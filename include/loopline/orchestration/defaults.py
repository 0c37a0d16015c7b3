"""Defaults every Loopline DAG shares: owner, retries, tags vocabulary and the doc_md layout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
}

# Every DAG's doc_md carries these sections, so triage always starts from the same place.
DOC_SECTIONS = ("## What it does", "## Inputs", "## Outputs", "## Owner", "## Triage")


def tags(*names: str) -> list[str]:
    """Tags for a DAG, checked against the vocabulary at parse time (a typo fails the DagBag)."""
    unknown = sorted(set(names) - TAGS)
    if unknown:
        raise ValueError(f"unknown DAG tags {unknown}; allowed: {sorted(TAGS)}")
    return ["loopline", *sorted(set(names) - {"loopline"})]
