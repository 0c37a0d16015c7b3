"""Where rendered reports are kept and linked when ``storage.reports_uri`` is object storage (no server needed).

Uploads and the plugin serving from the bucket run against the S3-compatible server in
``tests/integration/test_s3_reports.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopline.config import get_config
from loopline.orchestration import reports
from loopline.orchestration.links import report_url

S3_REPORTS = "s3://loopline-reports/reports"


@pytest.fixture
def reports_uri() -> Iterator[Callable[..., None]]:
    """Set ``storage.reports_uri`` (and ``reports_url``) for one test; the config cache is fresh around it."""

    def use(uri: str, url: str | None = None) -> None:
        os.environ["LOOPLINE__STORAGE__REPORTS_URI"] = uri
        if url:
            os.environ["LOOPLINE__STORAGE__REPORTS_URL"] = url
        get_config.cache_clear()

    yield use
    os.environ.pop("LOOPLINE__STORAGE__REPORTS_URI", None)
    os.environ.pop("LOOPLINE__STORAGE__REPORTS_URL", None)
    get_config.cache_clear()


def test_objects_under_the_reports_prefix_link_under_the_reports_url(reports_uri):
    reports_uri(S3_REPORTS)
    page = f"{S3_REPORTS}/gx/features/ds=2026-01-02/validations/features/run 1.html"
    assert report_url(page) == "/loopline/reports/gx/features/ds=2026-01-02/validations/features/run%201.html"
    reports_uri(S3_REPORTS + "/", "https://reports.example.org/loopline/")
    assert report_url(f"{S3_REPORTS}/drift/ds=2026-01-02/report.html") == (
        "https://reports.example.org/loopline/drift/ds=2026-01-02/report.html"
    )
    # Anything else is passed on as it is: another bucket or prefix, a local path, a URL.
    assert report_url("s3://other-bucket/reports/x.html") == "s3://other-bucket/reports/x.html"
    assert report_url("s3://loopline-reports/reportsX/x.html") == "s3://loopline-reports/reportsX/x.html"
    assert report_url("/tmp/reports/x.html") == "/tmp/reports/x.html"
    assert report_url(None) is None


def test_a_file_url_reports_folder_links_like_a_path(reports_uri, tmp_path):
    reports_uri(f"file://{tmp_path}")
    assert report_url(f"file://{tmp_path}/drift/ds=2026-01-02/report.html") == (
        "/loopline/reports/drift/ds=2026-01-02/report.html"
    )


def test_a_local_reports_folder_is_its_own_space(reports_uri, tmp_path):
    reports_uri(str(tmp_path / "reports"))
    with reports.report_space() as space:
        assert (space.root, space.remote) == (tmp_path / "reports", False)
        folder = space.root / "drift" / "ds=2026-01-02"
        folder.mkdir(parents=True)
        (folder / "report.html").write_text("<html></html>")
        assert space.publish(folder) == 0  # nothing to upload, no object store asked
        assert space.stored_uri(f"file://{folder}/report.html") == f"file://{folder}/report.html"
    assert (folder / "report.html").exists()  # the reports folder is not scratch


def test_an_object_store_space_renders_in_scratch_and_names_objects(reports_uri):
    reports_uri(S3_REPORTS)
    with reports.report_space() as space:
        assert space.remote
        page = space.root / "gx" / "features" / "ds=2026-01-02" / "validations" / "a b.html"
        page.parent.mkdir(parents=True)
        page.write_text("<html></html>")
        expected = f"{S3_REPORTS}/gx/features/ds=2026-01-02/validations/a b.html"
        assert space.stored_uri(page) == expected
        # GX escapes page names in the file:// URLs it returns; the object is named as the file is.
        assert space.stored_uri(f"file://{page.parent}/a%20b.html") == expected
        with pytest.raises(ValueError, match="not under the reports folder"):
            space.stored_uri(Path("/elsewhere/report.html"))
        scratch = space.root
    assert not scratch.exists()


def test_an_unsupported_reports_uri_is_refused_naming_the_key(reports_uri):
    reports_uri("gs://bucket/reports")
    with pytest.raises(ValueError, match=r"storage\.reports_uri 'gs://bucket/reports'"), reports.report_space():
        pass


def test_split():
    assert reports.split("s3://bucket/some/prefix/") == ("bucket", "some/prefix")
    assert reports.split("s3a://bucket") == ("bucket", "")
