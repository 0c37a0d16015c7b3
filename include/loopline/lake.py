"""The lake: Parquet tables partitioned by ``ds`` with atomic, versioned partition commits.

A partition ``<lake>/<table>/ds=<ds>/`` holds immutable versions ``run=<version>/`` and a ``_CURRENT``
pointer naming the committed one. A writer writes a new version folder (Spark's own commit protocol makes
that folder complete or absent of a ``_SUCCESS``), then replaces the pointer in one atomic step
(``os.replace`` locally, a single PUT on S3). Readers resolve the pointer, so they see the old partition or
the new one, never a mix, and a crashed writer leaves only an unreferenced folder that the next commit
sweeps. The previous version is kept one commit longer for readers that resolved it just before a flip.

Pins: a long reader (a training run) or a durable reference (a registered model's data fingerprint) pins the
versions it needs with a marker ``<lake>/_PINS/<pin id>.json`` (:meth:`Lake.pin`, :meth:`Lake.pin_current`);
the sweep never deletes a pinned version, and reports what it kept and why (:class:`SweepReport`). A run's pin
is released when the run ends (:meth:`Lake.release`); a model version's pin lasts as long as the version.

Analysts never read the lake directly (they use Postgres); jobs read through :meth:`Lake.partition`. An
object-store lake is reached through the Airflow connection ``storage.aws_conn_id`` (:mod:`loopline.objectstore`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loopline import objectstore
from loopline.objectstore import split as _split_s3

POINTER = "_CURRENT"
PINS = "_PINS"  # pin markers, one JSON object per holder, at the lake's root
_PIN_NAME = re.compile(r"[^A-Za-z0-9._-]+")
log = logging.getLogger(__name__)

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


def pin_file_name(pin_id: str) -> str:
    """The marker's file name for a pin id: readable, safe as a file name and S3 key, unique per id."""
    digest = hashlib.sha256(pin_id.encode()).hexdigest()[:12]
    return f"{_PIN_NAME.sub('_', pin_id).strip('._')[:120]}-{digest}.json"


def run_pin_id(dag_id: str, run_id: str) -> str:
    """The pin id of an Airflow run's inputs (what the trainer gets as ``--pin-id``)."""
    return f"{dag_id}__{run_id}"


def model_pin_id(model_name: str, version: int | str) -> str:
    """The pin id of a registered model version's data fingerprint."""
    return f"model:{model_name}:v{version}"


PinnedVersions = dict[str, dict[str, str]]  # table -> ds (ISO) -> version


class UnreadablePins(ValueError):
    """A pin marker cannot be parsed: the sweep keeps every version rather than guess what it held."""


@dataclass(frozen=True)
class Pin:
    """One pin marker: who holds which versions."""

    pin_id: str
    kind: str  # "run": an unfinished run's inputs; "model": a registered model version's fingerprint
    versions: PinnedVersions
    created_at: str = ""


@dataclass
class SweepReport:
    """What one sweep of a partition deleted and what it kept, with the reason for each kept version."""

    table: str
    ds: str
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # version -> why

    @property
    def pinned(self) -> dict[str, str]:
        return {version: why for version, why in self.kept.items() if "pinned by" in why}

    def summary(self) -> str:
        reasons = "; ".join(f"{version}: {why}" for version, why in sorted(self.kept.items()))
        return (
            f"sweep {self.table} ds={self.ds}: kept {len(self.kept)} version(s) ({reasons or 'none'}), "
            f"{len(self.pinned)} of them pinned; deleted {len(self.deleted)}"
        )


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

    def version_written(self, table: str, ds: str | dt.date, version: str) -> bool:
        """Whether a version folder holds any file (a multi-day write makes no folder for a day without rows)."""
        return version in self._versions(table, ds)

    def mark_written(self, table: str, ds: str | dt.date, version: str) -> None:
        """Write a version's ``_SUCCESS`` marker: for versions written by a multi-day Spark job (one job, many
        partition folders, none with a marker of its own), once the whole job has succeeded."""
        uri = self._join(table, f"ds={ds}", f"run={version}", "_SUCCESS")
        if self.is_s3:
            bucket, key = _split_s3(uri)
            with objectstore.s3(self.aws_conn_id) as s3:
                s3.put_object(Bucket=bucket, Key=key, Body=b"")
            return
        Path(uri).touch()

    def copy_version(self, table: str, source: tuple[dt.date, str], target: tuple[dt.date, str]) -> None:
        """Copy a written version (``(ds, version)``) to another day's new version, ``_SUCCESS`` included."""
        src = self._join(table, f"ds={source[0]}", f"run={source[1]}")
        dst = self._join(table, f"ds={target[0]}", f"run={target[1]}")
        if self.is_s3:
            bucket, key = _split_s3(src + "/")
            _, target_key = _split_s3(dst + "/")
            with objectstore.s3(self.aws_conn_id) as s3:
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                    for item in page.get("Contents", []):
                        name = target_key + item["Key"][len(key) :]
                        s3.copy_object(Bucket=bucket, Key=name, CopySource={"Bucket": bucket, "Key": item["Key"]})
            return
        shutil.copytree(src, dst)

    def commit(self, table: str, ds: str | dt.date, version: str, stats: dict | None = None) -> SweepReport:
        """Point the partition at ``version`` (which must be fully written), then sweep stale, unpinned versions."""
        if not self.is_s3 and not (Path(self.version_uri(table, ds, version)) / "_SUCCESS").exists():
            raise RuntimeError(f"refusing to commit {table} ds={ds}: version {version} has no _SUCCESS marker")
        current = self.current_version(table, ds)
        # Recommitting the current version (a retried task) keeps the real previous one for readers.
        previous = self._read_record(table, ds).get("previous") if current == version else current
        record = {"version": version, "previous": previous, "committed_at": dt.datetime.now(dt.UTC).isoformat()}
        record["stats"] = stats or {}
        self._write_text_atomic(self._join(table, f"ds={ds}", POINTER), json.dumps(record, sort_keys=True))
        report = self.sweep(table, ds)
        log.info("%s", report.summary())
        return report

    # -- pins -----------------------------------------------------------------------------------------------

    def _pin_uri(self, pin_id: str) -> str:
        return self._join(PINS, pin_file_name(pin_id))

    def read_pin(self, pin_id: str) -> Pin | None:
        """The marker of ``pin_id``, or None when it holds nothing."""
        text = self._read_text(self._pin_uri(pin_id))
        return _parse_pin(text) if text else None

    def pin(self, pin_id: str, versions: Mapping[str, Mapping[str, str]], *, kind: str = "run") -> str:
        """Add ``versions`` (table -> ds -> version) to the marker of ``pin_id`` (written atomically); its URI.

        One holder writes one marker (a run, a model version), so the read-merge-write needs no lock.
        """
        if kind not in ("run", "model"):
            raise ValueError(f"pin kind must be run or model, not {kind!r}")
        existing = self.read_pin(pin_id)
        merged: PinnedVersions = {t: dict(days) for t, days in (existing.versions if existing else {}).items()}
        for table, days in versions.items():
            for day, version in days.items():
                if version:
                    merged.setdefault(table, {})[str(day)] = version
        now = dt.datetime.now(dt.UTC).isoformat()
        marker = {
            "pin_id": pin_id,
            "kind": kind,
            "created_at": existing.created_at if existing else now,
            "updated_at": now,
            "versions": merged,
        }
        uri = self._pin_uri(pin_id)
        self._write_text_atomic(uri, json.dumps(marker, sort_keys=True, indent=1))
        return uri

    def pin_current(self, pin_id: str, table: str, days: Iterable[dt.date], *, attempts: int = 5) -> dict[dt.date, str]:
        """Pin the committed versions of ``table`` for ``days`` and return them (days without one are absent).

        Protocol: resolve, write the pin, then re-read each pointer. A version still current or previous after
        the pin is on disk cannot be swept any more: a commit keeps its own current and previous, and every later
        commit's sweep reads the pins after writing its pointer, so it sees this pin. A version that moved on in
        between is resolved again and pinned too.
        """
        days = list(days)
        resolved: dict[dt.date, str] = {}
        todo = days
        for _ in range(attempts):
            for day in todo:
                version = self.current_version(table, day)
                if version:
                    resolved[day] = version
                else:
                    resolved.pop(day, None)
            self.pin(pin_id, {table: {day.isoformat(): version for day, version in resolved.items()}})
            todo = []
            for day in days:
                record = self._read_record(table, day)
                if day in resolved:
                    moved = resolved[day] not in (record.get("version"), record.get("previous"))
                else:
                    moved = bool(record.get("version"))  # committed since: pin it too
                if moved:
                    todo.append(day)
            if not todo:
                return resolved
        raise RuntimeError(f"{table}: partitions of {todo} kept changing while pinning them; retry the run")

    def release(self, pin_id: str) -> bool:
        """Delete the marker of ``pin_id`` (idempotent); True when there was one."""
        uri = self._pin_uri(pin_id)
        if self.is_s3:
            bucket, key = _split_s3(uri)
            with objectstore.s3(self.aws_conn_id) as s3:
                listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
                existed = any(item["Key"] == key for item in listed)
                s3.delete_object(Bucket=bucket, Key=key)  # idempotent
            return existed
        path = Path(uri)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def release_model_pins(self, model_name: str, live_versions: Iterable[int | str]) -> list[str]:
        """Release the pins of ``model_name``'s versions that are not in ``live_versions`` (deleted from the
        registry); returns the pin ids released."""
        live = {model_pin_id(model_name, version) for version in live_versions}
        prefix = model_pin_id(model_name, "")
        released = []
        for pin in self.pins():
            if pin.kind == "model" and pin.pin_id.startswith(prefix) and pin.pin_id not in live:
                self.release(pin.pin_id)
                released.append(pin.pin_id)
        return released

    def pins(self) -> list[Pin]:
        """Every pin marker in the lake (an unreadable marker is an error: the sweep must not guess)."""
        prefix = self._join(PINS) + "/"
        texts: list[str] = []
        if self.is_s3:
            bucket, key = _split_s3(prefix)
            with objectstore.s3(self.aws_conn_id) as s3:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                for item in (obj for page in pages for obj in page.get("Contents", [])):
                    if item["Key"].endswith(".json"):
                        texts.append(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode())
        else:
            root = Path(prefix)
            texts = [path.read_text() for path in sorted(root.glob("*.json"))] if root.is_dir() else []
        try:
            return [_parse_pin(text) for text in texts]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UnreadablePins(f"a pin marker under {prefix} is unreadable ({exc}); fix or delete it") from exc

    def pinned_versions(self, table: str, ds: str | dt.date) -> dict[str, list[str]]:
        """Versions of the partition held by pins: version -> the pin ids holding it."""
        held: dict[str, list[str]] = {}
        for pin in self.pins():
            version = pin.versions.get(table, {}).get(str(ds))
            if version:
                held.setdefault(version, []).append(f"{pin.kind} {pin.pin_id}")
        return held

    # -- the sweep ------------------------------------------------------------------------------------------

    def sweep(self, table: str, ds: str | dt.date) -> SweepReport:
        """Delete the partition's versions that are neither current, previous, pinned nor newer than the current
        one (a concurrent writer's); report what it kept.

        Reads the pointer and the pins after the commit's pointer write (see :meth:`pin_current`).
        """
        record = self._read_record(table, ds)
        report = SweepReport(table, str(ds))
        reasons: dict[str, str] = {}
        if record.get("previous"):
            reasons[record["previous"]] = "previous (readers that resolved it before the last commit)"
        if record.get("version"):
            reasons[record["version"]] = "current"
        try:
            held = self.pinned_versions(table, ds)
            unreadable = None
        except UnreadablePins as exc:  # never guess: keep everything, publish anyway, say why
            held, unreadable = {}, str(exc)
            log.warning("sweep %s ds=%s skipped: %s", table, ds, exc)
        for version, holders in held.items():
            why = f"pinned by {', '.join(sorted(holders))}"
            reasons[version] = f"{reasons[version]}; {why}" if version in reasons else why
        for version in self._versions(table, ds):
            if unreadable is not None:
                report.kept[version] = reasons.get(version, f"unswept: {unreadable}")
            elif version in reasons:
                report.kept[version] = reasons[version]
            elif record.get("version") and version > record["version"]:
                # versions are named by their start time: a newer one is a concurrent writer's, not yet committed
                report.kept[version] = "newer than the current version (another writer may still be committing it)"
            else:
                self._delete_version(table, ds, version)
                report.deleted.append(version)
        return report

    def _versions(self, table: str, ds: str | dt.date) -> list[str]:
        root = self.partition_root(table, ds)
        if self.is_s3:
            bucket, key = _split_s3(root + "/")
            with objectstore.s3(self.aws_conn_id) as s3:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/")
                names = [p["Prefix"][len(key) :].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]
        else:
            names = [child.name for child in Path(root).glob("run=*")]
        return sorted(name.removeprefix("run=") for name in names if name.startswith("run="))

    def _delete_version(self, table: str, ds: str | dt.date, version: str) -> None:
        uri = self._join(table, f"ds={ds}", f"run={version}")
        if not self.is_s3:
            shutil.rmtree(uri, ignore_errors=True)
            return
        bucket, key = _split_s3(uri + "/")
        with objectstore.s3(self.aws_conn_id) as s3:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            keys = [{"Key": obj["Key"]} for page in pages for obj in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})

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


def _parse_pin(text: str) -> Pin:
    data = json.loads(text)
    versions = {table: {str(day): str(v) for day, v in days.items()} for table, days in data["versions"].items()}
    return Pin(str(data["pin_id"]), str(data.get("kind", "run")), versions, str(data.get("created_at", "")))
