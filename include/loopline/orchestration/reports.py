"""Rendered reports (Great Expectations Data Docs, drift reports) kept where ``storage.reports_uri`` says.

Reports are always rendered into a local folder laid out as ``reports_uri`` is (``gx/<suite>/ds=<ds>/``,
``drift/ds=<ds>/``). A local ``reports_uri`` is that folder itself, as it always was. An object-store one
(``s3://bucket/prefix``) gets a scratch folder per task: :meth:`ReportSpace.publish` uploads one day's folder
through the amazon provider's ``S3Hook`` (the ``storage.aws_conn_id`` connection, whose extra may name an
``endpoint_url``), and :meth:`ReportSpace.stored_uri` names a rendered file by its object (``s3://…``), which
:func:`loopline.orchestration.links.report_url` maps to ``storage.reports_url`` as it maps local paths.
:func:`read_object` is what the Loopline plugin serves ``/loopline/reports/…`` from.

DAG files import this module through the task modules: the amazon provider is imported inside functions.
"""

from __future__ import annotations

import mimetypes
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from loopline.config import LooplineConfig, get_config, resolve_uri

__all__ = ["OBJECT_SCHEMES", "ReportSpace", "is_object_store", "read_object", "report_space", "split"]

OBJECT_SCHEMES = ("s3://", "s3a://")
# The plugin's reads reuse a hook per server thread for this long: a page pulls a dozen assets, and a new hook
# costs a connection lookup and a boto3 session each; boto3 resources are not shared across threads.
_READER_SECONDS = 300.0
_readers = threading.local()


def is_object_store(uri: str) -> bool:
    """Whether ``uri`` names object storage the amazon provider reaches (``s3://`` / ``s3a://``)."""
    return uri.startswith(OBJECT_SCHEMES)


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` as ``("bucket", "some/key")`` (no slash at either end of the key)."""
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key.strip("/")


def _local_root(uri: str) -> Path:
    """The folder a local ``reports_uri`` (a path or ``file://`` URL, already resolved) names."""
    if "://" in uri and not uri.startswith("file://"):
        schemes = ", ".join(OBJECT_SCHEMES)
        raise ValueError(f"storage.reports_uri {uri!r}: a local folder, file:// or one of {schemes} is supported")
    return Path(uri.removeprefix("file://"))


@dataclass(frozen=True)
class ReportSpace:
    """Where a task renders reports (``root``, a local folder) and where they are kept (``reports_uri``)."""

    root: Path
    reports_uri: str
    conn_id: str

    @property
    def remote(self) -> bool:
        """Whether the reports are kept in object storage (``root`` is then a scratch folder)."""
        return is_object_store(self.reports_uri)

    def _relative(self, local: str | Path) -> Path:
        text = str(local).removeprefix("file://")
        path = Path(text)
        if not path.exists() and Path(unquote(text)).exists():  # GX escapes its page names in the URLs it returns
            path = Path(unquote(text))
        try:
            return path.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise ValueError(f"{local} is not under the reports folder {self.root}") from None

    def stored_uri(self, local: str | Path | None) -> str | None:
        """Where a rendered file is kept: as given when local, else its object's ``s3://`` URI."""
        if not local:
            return None
        if not self.remote:
            return str(local)
        relative = self._relative(local).as_posix()
        return f"{self.reports_uri.rstrip('/')}/{relative}"

    def publish(self, folder: Path) -> int:
        """Upload ``folder`` (one day's report, under ``root``) into object storage; returns the files uploaded.

        Every file is written with ``replace=True`` and its content type (so a web front of the bucket shows
        pages, not downloads); objects under that day's prefix that this render did not write (an earlier
        render's pages) are deleted afterwards, so the day's prefix mirrors the latest report. Locally: nothing.
        """
        if not self.remote:
            return 0
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        relative = self._relative(folder)
        if relative == Path("."):
            raise ValueError(f"publish one report's folder under {self.root}, not the whole reports folder")
        bucket, prefix = split(f"{self.reports_uri.rstrip('/')}/{relative.as_posix()}")
        hooks: dict[str, S3Hook] = {}  # the content type goes in a hook's extra_args: one hook per type
        written: set[str] = set()
        for path in sorted(item for item in Path(folder).rglob("*") if item.is_file()):
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type not in hooks:
                hooks[content_type] = S3Hook(aws_conn_id=self.conn_id, extra_args={"ContentType": content_type})
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            hooks[content_type].load_file(str(path), key=key, bucket_name=bucket, replace=True)
            written.add(key)
        hook = next(iter(hooks.values()), None) or S3Hook(aws_conn_id=self.conn_id)
        stale = sorted(set(hook.list_keys(bucket_name=bucket, prefix=f"{prefix}/")) - written)
        if stale:
            hook.delete_objects(bucket=bucket, keys=stale)
        return len(written)


@contextmanager
def report_space(cfg: LooplineConfig | None = None) -> Iterator[ReportSpace]:
    """The :class:`ReportSpace` of ``storage.reports_uri``: its own folder when local, a scratch folder (removed
    when the block ends: publish before) when it is object storage."""
    storage = (cfg or get_config()).storage
    uri = resolve_uri(storage.reports_uri)
    if not is_object_store(uri):
        yield ReportSpace(root=_local_root(uri), reports_uri=uri, conn_id=storage.aws_conn_id)
        return
    with tempfile.TemporaryDirectory(prefix="loopline-reports-") as scratch:
        yield ReportSpace(root=Path(scratch), reports_uri=uri, conn_id=storage.aws_conn_id)


def read_object(reports_uri: str, relative: str, conn_id: str) -> Any | None:
    """The ``S3.Object`` of ``relative`` (a path under ``reports_uri``, already checked), or None if missing.

    Other failures (server unreachable, credentials refused) raise: they are not a missing report.
    """
    from botocore.exceptions import ClientError

    bucket, prefix = split(reports_uri)
    key = f"{prefix}/{relative}" if prefix else relative
    try:
        return _reader(conn_id).get_key(key, bucket_name=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _reader(conn_id: str) -> Any:
    """This thread's ``S3Hook`` for ``conn_id``, made again after :data:`_READER_SECONDS` (a changed connection)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hooks = _readers.__dict__.setdefault("hooks", {})
    found = hooks.get(conn_id)
    if found is None or time.monotonic() - found[1] > _READER_SECONDS:
        found = hooks[conn_id] = (S3Hook(aws_conn_id=conn_id), time.monotonic())
    return found[0]
