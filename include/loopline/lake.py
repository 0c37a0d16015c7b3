"""The lake: Parquet tables partitioned by ``ds`` with atomic, versioned partition commits.

A partition ``<lake>/<table>/ds=<ds>/`` holds immutable versions ``run=<version>/`` and a ``_CURRENT``
pointer naming the committed one. A writer writes a new version folder (Spark's own commit protocol makes
that folder complete or absent of a ``_SUCCESS``), then replaces the pointer in one atomic step
(``os.replace`` locally, a single PUT on S3). Readers resolve the pointer, so they see the old partition or
the new one, never a mix, and a crashed writer leaves only an unreferenced folder that the next commit
sweeps. The previous version is kept one commit longer for readers that resolved it just before a flip.

Analysts never read the lake directly (they use Postgres); jobs read through :meth:`Lake.partition`. An
object-store lake is reached through the Airflow connection ``storage.aws_conn_id`` (:mod:`loopline.objectstore`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from loopline import objectstore
from loopline.objectstore import split as _split_s3

POINTER = "_CURRENT"

# Table names used across jobs, in one place.
RAW_TRANSACTIONS = "raw/transactions"
RAW_LABELS = "raw/labels"
QUARANTINE_TRANSACTIONS = "quarantine/transactions"
QUARANTINE_LABELS = "quarantine/labels"
LABELED_TRANSACTIONS = "labels/labeled_transactions"
CUSTOMER_DAILY = "aggregates/customer_daily"
MERCHANT_LABEL_DAILY = "aggregates/merchant_label_daily"
FEATURES = "features"
# Rolling per-day state of the feature job: partition ds=D holds the history available to day D.
STATE_CUSTOMER = "state/customer_window"
STATE_MERCHANT_RISK = "state/merchant_risk_window"
STATE_CUSTOMER_MERCHANTS = "state/customer_merchants"
SCORES = "scores"
SCORES_SHADOW = "scores_shadow"


def new_version() -> str:
    """A sortable, unique version id: UTC timestamp plus random suffix."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def day_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Days from ``start`` to ``end`` inclusive."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


@dataclass(frozen=True)
class Lake:
    """A lake rooted at a local folder or an ``s3://bucket/prefix`` URI.

    An object store is reached through the Airflow connection ``aws_conn_id`` (default: ``storage.aws_conn_id``).
    """

    root: str
    aws_conn_id: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.root.startswith(("s3://", "s3a://"))

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def table_uri(self, table: str) -> str:
        """The table's root as Spark reads it (``basePath`` for partition discovery)."""
        uri = self._join(table)
        return uri.replace("s3://", "s3a://", 1) if self.is_s3 else uri

    def partition_root(self, table: str, ds: str | dt.date) -> str:
        return self._join(table, f"ds={ds}")

    def version_uri(self, table: str, ds: str | dt.date, version: str) -> str:
        """Where a writer puts a new version; Spark paths use ``s3a://`` for S3."""
        uri = self._join(table, f"ds={ds}", f"run={version}")
        return uri.replace("s3://", "s3a://", 1) if self.is_s3 else uri

    # -- pointer I/O ----------------------------------------------------------------------------------------

    def _read_text(self, uri: str) -> str | None:
        if self.is_s3:
            bucket, key = _split_s3(uri)
            with objectstore.s3(self.aws_conn_id) as s3:
                try:
                    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
                except s3.exceptions.NoSuchKey:
                    return None
        path = Path(uri)
        return path.read_text() if path.exists() else None

    def _write_text_atomic(self, uri: str, text: str) -> None:
        if self.is_s3:
            bucket, key = _split_s3(uri)
            with objectstore.s3(self.aws_conn_id) as s3:
                s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(text)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old pointer or the new one

    def current_version(self, table: str, ds: str | dt.date) -> str | None:
        return self._read_record(table, ds).get("version")

    def partition(self, table: str, ds: str | dt.date) -> str | None:
        """The Spark-readable URI of the committed version of a partition, or None if there is none."""
        version = self.current_version(table, ds)
        return self.version_uri(table, ds, version) if version else None

    def partitions(self, table: str, days: Iterable[dt.date]) -> dict[dt.date, str]:
        """Committed partitions among ``days`` (missing days are simply absent from the result)."""
        found = {}
        for day in days:
            uri = self.partition(table, day)
            if uri:
                found[day] = uri
        return found

    def first_day(self, table: str) -> dt.date | None:
        """The oldest ``ds`` with a committed partition of ``table`` (the lake's age), or None."""
        prefix = self._join(table) + "/"
        if self.is_s3:
            bucket, key = _split_s3(prefix)
            with objectstore.s3(self.aws_conn_id) as s3:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/")
                names = [p["Prefix"][len(key) :].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]
        else:
            root = Path(prefix)
            names = [child.name for child in root.glob("ds=*")] if root.is_dir() else []
        for name in sorted(names):  # ISO dates sort in time order
            try:
                day = dt.date.fromisoformat(name.removeprefix("ds="))
            except ValueError:
                continue
            if self.current_version(table, day):
                return day
        return None

    def commit(self, table: str, ds: str | dt.date, version: str, stats: dict | None = None) -> None:
        """Point the partition at ``version`` (which must be fully written), then sweep stale versions."""
        if not self.is_s3 and not (Path(self.version_uri(table, ds, version)) / "_SUCCESS").exists():
            raise RuntimeError(f"refusing to commit {table} ds={ds}: version {version} has no _SUCCESS marker")
        current = self.current_version(table, ds)
        # Recommitting the current version (a retried task) keeps the real previous one for readers.
        previous = self._read_record(table, ds).get("previous") if current == version else current
        record = {"version": version, "previous": previous, "committed_at": dt.datetime.now(dt.UTC).isoformat()}
        record["stats"] = stats or {}
        self._write_text_atomic(self._join(table, f"ds={ds}", POINTER), json.dumps(record, sort_keys=True))
        self._sweep(table, ds, keep={version, previous})

    def _sweep(self, table: str, ds: str | dt.date, keep: set[str | None]) -> None:
        if self.is_s3:
            return  # object stores: a lifecycle rule on run=* prefixes does this (see README)
        root = Path(self.partition_root(table, ds))
        for child in root.glob("run=*"):
            if child.name.removeprefix("run=") not in keep:
                shutil.rmtree(child, ignore_errors=True)

    def _read_record(self, table: str, ds: str | dt.date) -> dict:
        text = self._read_text(self._join(table, f"ds={ds}", POINTER))
        return json.loads(text) if text else {}

    def stats(self, table: str, ds: str | dt.date) -> dict:
        """The stats recorded with the committed version (row counts and the like)."""
        return self._read_record(table, ds).get("stats", {})

    def arrow_dataset(self, uri: str):
        """A partition version as a ``pyarrow.dataset`` (local or S3), for readers outside Spark."""
        import pyarrow.dataset as pads

        if self.is_s3:
            # Spark's _SUCCESS / .crc files start with '_' or '.', which pyarrow skips by default.
            path, filesystem = uri.split("://", 1)[1], objectstore.arrow_filesystem(self.aws_conn_id)
            with objectstore.s3(self.aws_conn_id):  # its first request: an unreachable store fails here, named
                return pads.dataset(path, format="parquet", filesystem=filesystem, partitioning=None)
        return pads.dataset(uri, format="parquet", partitioning=None)
