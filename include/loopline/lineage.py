"""Lineage dataset names and reading lineage back from OpenLineage events.

Every Loopline dataset has one OpenLineage identity, ``(namespace, name)``, with the namespace from the YAML
(``lineage.namespace``) and a name that says what the data is and, for daily data, which day (``ds=``):

==========================  ===============================================================
landing drop                ``loopline_landing/<kind>/ds=<ds>`` (``kind``: transactions, labels)
lake table                  ``loopline_lake/<table>/ds=<ds>`` (e.g. ``loopline_lake/raw/transactions/ds=...``)
features (Asset)            ``loopline_features/ds=<ds>``: the ``loopline_features`` Asset's day
scores (Asset)              ``loopline_scores/ds=<ds>``: the ``loopline_scores`` Asset's day
analyst table               ``loopline_analyst/<relation>/ds=<ds>`` (Postgres, schema of ``postgres.schema``)
MLflow run                  ``loopline_mlflow/runs/<run_id>``
registered model version    ``loopline_model/<name>/v<version>``
==========================  ===============================================================

The Assets the DAGs declare (:data:`FEATURES_ASSET`, :data:`SCORES_ASSET`) are these names without the day, so
an Asset event and the lineage of its day's partition share one name. A lake dataset carries the lake version
it was (``datasetVersion`` facet): with the model's inputs it leads from a model version to the exact
partitions it was trained on.

:func:`read_events` and :class:`LineageGraph` read a file transport's JSON lines back and walk the edges
(inputs to outputs of one task run), e.g. from a day's scores back to its landing drop. Nothing here knows
Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FEATURES_ASSET = "loopline_features"
SCORES_ASSET = "loopline_scores"
LANDING = "loopline_landing"
LAKE = "loopline_lake"
ANALYST = "loopline_analyst"
MLFLOW_RUNS = "loopline_mlflow/runs"
MODELS = "loopline_model"

# Lake tables whose daily partitions are an Asset's day (lake table -> Asset name).
_ASSET_TABLES = {"features": FEATURES_ASSET, "scores": SCORES_ASSET}


@dataclass(frozen=True)
class LineageDataset:
    """One dataset of a lineage event: its identity and, for versioned lake data, the version read or written."""

    namespace: str
    name: str
    version: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _day(ds: dt.date | str) -> str:
    return ds.isoformat() if isinstance(ds, dt.date) else dt.date.fromisoformat(str(ds)).isoformat()


def landing(namespace: str, kind: str, ds: dt.date | str) -> LineageDataset:
    """The day's landing drop of ``kind`` (transactions, labels, fx_rates)."""
    return LineageDataset(namespace, f"{LANDING}/{kind}/ds={_day(ds)}")


def lake(namespace: str, table: str, ds: dt.date | str, version: str | None = None) -> LineageDataset:
    """The day's partition of a lake table (``loopline.lake`` table names), at ``version`` when known."""
    asset = _ASSET_TABLES.get(table)
    base = asset if asset else f"{LAKE}/{table}"
    return LineageDataset(namespace, f"{base}/ds={_day(ds)}", str(version) if version is not None else None)


def analyst(namespace: str, relation: str, ds: dt.date | str) -> LineageDataset:
    """The day's rows of an analyst table in Postgres."""
    return LineageDataset(namespace, f"{ANALYST}/{relation}/ds={_day(ds)}")


def mlflow_run(namespace: str, run_id: str) -> LineageDataset:
    """An MLflow run (the trainer's: its model, metrics and reference sample)."""
    return LineageDataset(namespace, f"{MLFLOW_RUNS}/{run_id}")


def model_version(namespace: str, name: str, version: int | str) -> LineageDataset:
    """A registered model version."""
    return LineageDataset(namespace, f"{MODELS}/{name}/v{version}")


def training_inputs(namespace: str, fingerprint: dict[str, Any]) -> list[LineageDataset]:
    """The lake partitions a training set's fingerprint names (features and matured labels), with versions."""
    from loopline import lake as tables

    found = []
    for key, table in (("feature_partitions", tables.FEATURES), ("label_partitions", tables.LABELED_TRANSACTIONS)):
        for ds, version in sorted((fingerprint.get(key) or {}).items()):
            found.append(lake(namespace, table, ds, version))
    return found


# ---------------------------------------------------------------------------------------------------------
# Reading events back


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The OpenLineage events of a file transport (one JSON object per line; unreadable lines are skipped)."""
    events = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write: the others still count
    return events


@dataclass
class LineageGraph:
    """Edges from each input dataset to each output dataset of the same task run, with the job that made them."""

    producers: dict[tuple[str, str], set[tuple[str, str]]]  # output -> its inputs
    jobs: dict[tuple[str, str], set[str]]  # output -> the jobs (``dag.task``) that wrote it
    versions: dict[tuple[str, str], set[str]]  # dataset -> the versions seen

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> LineageGraph:
        runs: dict[str, dict[str, Any]] = defaultdict(lambda: {"inputs": set(), "outputs": set(), "job": None})
        versions: dict[tuple[str, str], set[str]] = defaultdict(set)
        for event in events:
            run = runs[event.get("run", {}).get("runId", "")]
            run["job"] = event.get("job", {}).get("name") or run["job"]
            for side in ("inputs", "outputs"):
                for dataset in event.get(side) or []:
                    key = (dataset["namespace"], dataset["name"])
                    run[side].add(key)
                    version = ((dataset.get("facets") or {}).get("version") or {}).get("datasetVersion")
                    if version:
                        versions[key].add(str(version))
        producers: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        jobs: dict[tuple[str, str], set[str]] = defaultdict(set)
        for run in runs.values():
            for output in run["outputs"]:
                producers[output] |= run["inputs"] - {output}
                if run["job"]:
                    jobs[output].add(run["job"])
        return cls(dict(producers), dict(jobs), dict(versions))

    def upstream(self, dataset: tuple[str, str]) -> set[tuple[str, str]]:
        """Every dataset ``dataset`` was derived from, directly or not."""
        seen: set[tuple[str, str]] = set()
        todo = [dataset]
        while todo:
            for parent in self.producers.get(todo.pop(), set()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen

    def path(self, start: tuple[str, str], end: tuple[str, str]) -> list[tuple[str, str]] | None:
        """One chain of datasets from ``start`` to ``end`` following the edges (None when there is none)."""
        previous: dict[tuple[str, str], tuple[str, str]] = {}
        todo = [end]
        seen = {end}
        while todo:
            current = todo.pop(0)
            if current == start:
                chain = [start]
                while chain[-1] != end:
                    chain.append(previous[chain[-1]])
                return chain
            for parent in sorted(self.producers.get(current, set())):
                if parent not in seen:
                    seen.add(parent)
                    previous[parent] = current
                    todo.append(parent)
        return None
