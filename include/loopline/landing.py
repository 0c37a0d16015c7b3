"""The landing zone: one folder per day and kind, CSV files (optionally gzip) and a ``_SUCCESS`` marker.

This module inspects a day's drop before Spark reads it: which files exist, whether the drop is complete,
and which files are unreadable as a whole (empty, truncated gzip, undecodable or missing header columns).
Whole-file problems become counted file quarantines with a reason; Spark then reads only files whose rows
can be judged one by one.

An object-store landing is reached through the Airflow connection ``storage.aws_conn_id``
(:mod:`loopline.objectstore`). Where Spark cannot read the object store itself, :meth:`Landing.stage` copies
a day's data files to a folder every executor sees (``storage.stage_uri``); checks and records still name
the original ``s3://`` objects.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import shutil
import tempfile
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline import objectstore
from loopline.objectstore import split as _split

MARKER = "_SUCCESS"
KINDS = ("transactions", "labels")
_log = logging.getLogger(__name__)
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


class DropChanged(RuntimeError):
    """An object changed between the drop's listing and its staging copy (the producer is still writing)."""


@dataclass(frozen=True)
class Landing:
    """A landing zone rooted at a local folder or ``s3://bucket/prefix`` (``s3a://`` is read as ``s3://``).

    An object store is reached through the Airflow connection ``aws_conn_id`` (default: ``storage.aws_conn_id``).
    """

    root: str
    aws_conn_id: str | None = None

    def __post_init__(self) -> None:
        # One spelling for object URIs: listings, checks and quarantine records name s3:// objects.
        if self.root.startswith("s3a://"):
            object.__setattr__(self, "root", "s3://" + self.root.removeprefix("s3a://"))

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def day_uri(self, kind: str, ds: str) -> str:
        return f"{self.root.rstrip('/')}/{kind}/ds={ds}"

    def marker_uri(self, kind: str, ds: str) -> str:
        return f"{self.day_uri(kind, ds)}/{MARKER}"

    def spark_uri(self, uri: str) -> str:
        return uri.replace("s3://", "s3a://", 1) if self.is_s3 else uri

    def is_complete(self, kind: str, ds: str) -> bool:
        """True when the day's ``_SUCCESS`` marker exists."""
        if self.is_s3:
            import botocore.exceptions

            bucket, key = _split(self.marker_uri(kind, ds))
            with objectstore.s3(self.aws_conn_id) as s3:
                try:
                    s3.head_object(Bucket=bucket, Key=key)  # the exact key: `_SUCCESS.tmp` is not a marker
                except botocore.exceptions.ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                        return False
                    raise
            return True
        return Path(self.marker_uri(kind, ds)).exists()

    def _listing(self, kind: str, ds: str) -> dict[str, tuple[str, int, Any]]:
        """Name -> (uri, size in bytes, modification time) of every top-level file of the drop, the marker
        included; modification times compare within one landing (nanoseconds locally, S3's LastModified)."""
        if self.is_s3:
            bucket, prefix = _split(self.day_uri(kind, ds) + "/")
            with objectstore.s3(self.aws_conn_id) as s3:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                return {
                    name: (f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["LastModified"])
                    for page in pages
                    for obj in page.get("Contents", [])
                    # top-level files only, as locally: no folder placeholders, no _temporary/ contents
                    if (name := obj["Key"][len(prefix) :]) and "/" not in name
                }
        folder = Path(self.day_uri(kind, ds))
        if not folder.is_dir():
            return {}
        return {p.name: (str(p), (stat := p.stat()).st_size, stat.st_mtime_ns) for p in folder.iterdir() if p.is_file()}

    def data_files(self, kind: str, ds: str) -> list[tuple[str, int]]:
        """(uri, size in bytes) of every data file in the drop, sorted; hidden files and the marker excluded."""
        return sorted((uri, size) for name, (uri, size, _) in self._listing(kind, ds).items() if _is_data(name))

    def written_after_marker(self, kind: str, ds: str) -> list[str]:
        """Data files modified after the day's ``_SUCCESS`` marker (a complete drop has none).

        A producer that writes the marker first, or rewrites a file afterwards, would otherwise have a
        half-written file ingested as if it were the whole day.
        """
        listing = self._listing(kind, ds)
        if MARKER not in listing:
            return []
        marked = listing[MARKER][2]
        return sorted(uri for name, (uri, _, when) in listing.items() if _is_data(name) and when > marked)

    def open_binary(self, uri: str) -> io.BufferedIOBase:
        """A seekable binary file; S3 objects are spooled to a local temporary file first."""
        if self.is_s3:
            bucket, key = _split(uri)
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
            try:
                with objectstore.s3(self.aws_conn_id) as s3:
                    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
                    for chunk in body.iter_chunks(1 << 20):
                        spool.write(chunk)
            except BaseException:
                spool.close()
                raise
            spool.seek(0)
            return spool  # type: ignore[return-value]
        return open(uri, "rb")

    def stage_folder(self, stage_root: str, kind: str, ds: str) -> Path:
        """Where :meth:`stage` puts a day's copies: ``<stage_root>/<kind>/ds=<ds>``."""
        return Path(stage_root.removeprefix("file://")) / kind / f"ds={ds}"

    def stage(self, stage_root: str, kind: str, ds: str, files: list[tuple[str, int]] | None = None) -> dict[str, str]:
        """Copy an object-store drop's data files to :meth:`stage_folder`, for a Spark that cannot read S3.

        ``files`` are ``(uri, size)`` as :meth:`data_files` lists them (the default); only they are copied,
        under their own names. Returns each object's URI -> the local path of its copy. The copies go to a
        fresh hidden folder that then replaces the day's previous copy, so a rerun replaces the staged day
        and a failed copy leaves nothing behind. Raises :class:`DropChanged` when an object's size differs
        from the listing (it is being rewritten).
        """
        if not self.is_s3:
            raise ValueError(f"only an object-store landing is staged, not {self.root}")
        files = self.data_files(kind, ds) if files is None else files
        target = self.stage_folder(stage_root, kind, ds)
        target.parent.mkdir(parents=True, exist_ok=True)
        for debris in target.parent.glob(f".{target.name}.*"):  # a crashed earlier copy of this day
            shutil.rmtree(debris, ignore_errors=True)
        fresh = target.parent / f".{target.name}.{uuid.uuid4().hex}"  # hidden: never read as a day
        fresh.mkdir()
        try:
            staged = {}
            with objectstore.s3(self.aws_conn_id) as s3:
                for uri, size in files:
                    bucket, key = _split(uri)
                    name = key.rsplit("/", 1)[-1]
                    s3.download_file(bucket, key, str(fresh / name))
                    copied = (fresh / name).stat().st_size
                    if copied != size:
                        raise DropChanged(f"{uri} changed while it was staged: listed {size} bytes, copied {copied}")
                    staged[uri] = str(target / name)
            if target.exists():
                old = target.parent / f".{target.name}.{uuid.uuid4().hex}.old"
                os.replace(target, old)
                os.replace(fresh, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(fresh, target)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        _log.info("staged %d data files of %s to %s", len(staged), self.day_uri(kind, ds), target)
        return staged


@dataclass
class FileCheck:
    """The verdict on one file: readable by Spark, or quarantined whole with a reason."""

    uri: str
    size: int
    header: list[str] = field(default_factory=list)
    lines: int = 0  # data lines (header excluded) when the file was scanned
    reason: str | None = None
    extra_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class ScanLimits:
    """How much one landing file may make the ingest read (``validation.max_*_bytes``)."""

    max_line_bytes: int = 16 * 2**20
    max_field_bytes: int = 8 * 2**20
    max_decompressed_bytes: int = 2 * 2**30

    @classmethod
    def from_config(cls, validation: Any) -> ScanLimits:
        return cls(validation.max_line_bytes, validation.max_field_bytes, validation.max_decompressed_bytes)


class _Unbounded(Exception):
    """A file broke a scan limit: the reason it is quarantined with."""


def _scan(stream: io.BufferedIOBase, limits: ScanLimits) -> tuple[bytes, int]:
    """The header line and the number of data lines, reading at most one bounded line at a time.

    Tracks the quote parity of the CSV (``""`` is an escaped quote and keeps it): a quoted field that stays
    open across lines is one field to Spark's multi-line reader, so its length is bounded too.
    """
    header, lines, total, open_field = b"", 0, 0, -1  # open_field: bytes since the open quote, -1 when closed
    while True:
        line = stream.readline(limits.max_line_bytes + 1)
        if not line:
            return header, max(lines - 1, 0)
        total += len(line)
        if total > limits.max_decompressed_bytes:
            raise _Unbounded("decompressed_too_large")
        if len(line) > limits.max_line_bytes:
            raise _Unbounded("line_too_long")
        if not header:
            header = line
        lines += 1
        quotes = line.count(b'"')
        if open_field >= 0:
            open_field += len(line)
        if quotes % 2:
            open_field = -1 if open_field >= 0 else len(line) - line.index(b'"')
        if open_field > limits.max_field_bytes:  # counted from the first quote of the line: never too little
            raise _Unbounded("field_too_long")


def check_file(
    landing: Landing,
    uri: str,
    size: int,
    required: tuple[str, ...],
    local: str | None = None,
    limits: ScanLimits | None = None,
) -> FileCheck:
    """Scan a file once: decompressibility, header, data line count, and the scan limits.

    Truncated gzip, a missing or undecodable header and missing required columns quarantine the whole file
    (its rows cannot be judged one by one); extra columns are reported and ignored. A line, a field or a
    decompressed size beyond ``limits`` quarantines the file too, found without holding more than one bounded
    line in memory. ``local`` is a staged copy of ``uri`` to scan instead (:meth:`Landing.stage`); the check
    still names ``uri``.
    """
    check = FileCheck(uri=uri, size=size)
    if size == 0:
        check.reason = "empty_file"
        return check
    gzipped = uri.endswith(".gz")
    with open(local, "rb") if local else landing.open_binary(uri) as raw:
        stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
        try:
            first, count = _scan(io.BufferedReader(stream, buffer_size=1 << 20), limits or ScanLimits())
        except (EOFError, OSError, zlib.error):
            check.reason = "truncated_or_corrupt_gzip"
            return check
        except _Unbounded as exc:
            check.reason = str(exc)
            _log.warning("%s quarantined whole: %s (limits: %s)", uri, check.reason, limits or ScanLimits())
            return check
    check.lines = count
    try:
        text = first.decode("utf-8-sig").strip("\r\n")
    except UnicodeDecodeError:
        check.reason = "undecodable_header"
        return check
    if not text:
        check.reason = "empty_file"
        return check
    check.header = [name.strip().lower() for name in next(csv.reader([text]))]
    missing = [name for name in required if name not in check.header]
    delimiter = next((name for char, name in _OTHER_DELIMITERS.items() if char in text), None)
    if missing and len(check.header) == 1 and delimiter:
        check.reason = f"wrong_delimiter:{delimiter}"  # the contract is comma-separated
        return check
    if missing:
        check.reason = "missing_columns:" + ",".join(missing)
    check.extra_columns = [name for name in check.header if name not in required]
    if len(set(check.header)) != len(check.header):
        check.reason = "duplicate_header_columns"
    return check


def _is_data(name: str) -> bool:
    """Data files are every file but the marker and hidden ones (``_temporary``, ``.crc``, ...)."""
    return not name.startswith(("_", "."))
