"""An S3 source (a prefix per day on the session's S3-compatible server) is copied into the day's landing
drop byte for byte, replacing it whole; an export without its marker names the prefix and the day."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from loopline.config import S3Source
from loopline.landing import Landing
from loopline.sources import SourceError, copy_s3_day
from loopline.synth import generate

pytestmark = pytest.mark.integration

DS = dt.date(2026, 1, 2)


@pytest.fixture
def export(s3, tmp_path):
    """A generated day uploaded as an export: s3://<bucket>/exports/<kind>/date=<ds>/ with _SUCCESS."""
    files = tmp_path / "files"
    generate(DS, 1, files, transactions_per_day=200, seed=5, compress=True)
    bucket = f"src-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for kind in ("transactions", "labels"):
        for path in (files / kind / f"ds={DS}").iterdir():
            client.upload_file(str(path), bucket, f"exports/{kind}/date={DS}/{path.name}")
    return bucket, files, client


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith("_")}


def test_an_s3_export_becomes_the_same_landing_drop(export, tmp_path):
    bucket, files, client = export
    landing = tmp_path / "landing"
    for kind in ("transactions", "labels"):
        source = S3Source(kind="s3", prefix=f"s3://{bucket}/exports/{kind}/date={{ds}}")
        copied = copy_s3_day(source, kind, DS, str(landing))
        assert _bytes(Path(copied.folder)) == _bytes(files / kind / f"ds={DS}")
        assert Landing(str(landing)).is_complete(kind, str(DS))
    # Re-copying replaces the day whole: an object removed upstream disappears from the drop.
    client.put_object(Bucket=bucket, Key=f"exports/transactions/date={DS}/part-extra.csv", Body=b"x")
    source = S3Source(kind="s3", prefix=f"s3://{bucket}/exports/transactions/date={{ds}}")
    assert "part-extra.csv" in copy_s3_day(source, "transactions", DS, str(landing)).files
    client.delete_object(Bucket=bucket, Key=f"exports/transactions/date={DS}/part-extra.csv")
    again = copy_s3_day(source, "transactions", DS, str(landing))
    assert "part-extra.csv" not in again.files
    assert not (landing / "transactions" / f"ds={DS}" / "part-extra.csv").exists()
    assert not [p for p in (landing / "transactions").iterdir() if p.name.startswith(".")]


def test_an_incomplete_export_names_the_prefix_and_day_and_keeps_the_drop(export, tmp_path):
    bucket, _files, client = export
    landing = tmp_path / "landing"
    source = S3Source(kind="s3", prefix=f"s3://{bucket}/exports/labels/date={{ds}}")
    before = _bytes(Path(copy_s3_day(source, "labels", DS, str(landing)).folder))
    client.delete_object(Bucket=bucket, Key=f"exports/labels/date={DS}/_SUCCESS")
    with pytest.raises(SourceError, match=rf"s3://{bucket}/exports/labels/date={DS} \(labels, ds={DS}\): no _SUCCESS"):
        copy_s3_day(source, "labels", DS, str(landing))
    assert _bytes(landing / "labels" / f"ds={DS}") == before
    assert Landing(str(landing)).is_complete("labels", str(DS))
