"""The lake on a local folder: versioned partitions behind an atomic ``_CURRENT`` pointer.

No Spark here: a "Spark write" is faked by creating ``run=<version>/part-0.parquet`` and ``_SUCCESS``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from loopline.lake import POINTER, RAW_TRANSACTIONS, Lake, day_range, new_version

TABLE = RAW_TRANSACTIONS
DS = "2024-03-01"


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def _write(lake: Lake, version: str, ds: str | dt.date = DS, table: str = TABLE, success: bool = True) -> Path:
    """What a Spark writer leaves behind: the part files, then ``_SUCCESS`` if it finished."""
    folder = Path(lake.version_uri(table, ds, version))
    folder.mkdir(parents=True)
    (folder / "part-0.parquet").write_bytes(b"PAR1 fake PAR1")
    if success:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder


def _versions_on_disk(lake: Lake, ds: str | dt.date = DS, table: str = TABLE) -> set[str]:
    root = Path(lake.partition_root(table, ds))
    return {p.name.removeprefix("run=") for p in root.glob("run=*")}


def _pointer(lake: Lake, ds: str | dt.date = DS, table: str = TABLE) -> dict:
    return json.loads((Path(lake.partition_root(table, ds)) / POINTER).read_text())


# -- commit ------------------------------------------------------------------------------------------------


def test_uncommitted_partition_is_absent(lake):
    assert lake.partition(TABLE, DS) is None
    assert lake.current_version(TABLE, DS) is None
    assert lake.stats(TABLE, DS) == {}


def test_written_but_uncommitted_version_is_invisible(lake):
    _write(lake, "v1")
    assert lake.partition(TABLE, DS) is None


def test_commit_publishes_the_version(lake):
    folder = _write(lake, "v1")
    lake.commit(TABLE, DS, "v1", stats={"rows": 3, "quarantined": 1})

    assert lake.partition(TABLE, DS) == str(folder)
    assert lake.partition(TABLE, DS) == lake.version_uri(TABLE, DS, "v1")
    assert lake.current_version(TABLE, DS) == "v1"
    assert lake.stats(TABLE, DS) == {"rows": 3, "quarantined": 1}
    record = _pointer(lake)
    assert record["version"] == "v1"
    assert record["previous"] is None
    assert dt.datetime.fromisoformat(record["committed_at"]).tzinfo is not None


def test_commit_accepts_a_date(lake):
    day = dt.date(2024, 3, 1)
    _write(lake, "v1", ds=day)
    lake.commit(TABLE, day, "v1")
    assert lake.partition(TABLE, DS) == lake.partition(TABLE, day)
    assert lake.stats(TABLE, day) == {}  # no stats given


def test_commit_refuses_a_version_without_success(lake):
    _write(lake, "crashed", success=False)
    with pytest.raises(RuntimeError, match=r"no _SUCCESS marker"):
        lake.commit(TABLE, DS, "crashed")
    assert lake.partition(TABLE, DS) is None
    assert not (Path(lake.partition_root(TABLE, DS)) / POINTER).exists()


def test_commit_refuses_a_version_that_was_never_written(lake):
    with pytest.raises(RuntimeError, match=r"version ghost has no _SUCCESS"):
        lake.commit(TABLE, DS, "ghost")


def test_refused_commit_leaves_the_previous_pointer_intact(lake):
    _write(lake, "v1")
    lake.commit(TABLE, DS, "v1", stats={"rows": 10})
    before = _pointer(lake)
    _write(lake, "v2", success=False)  # the writer crashed mid-way

    with pytest.raises(RuntimeError, match=r"refusing to commit"):
        lake.commit(TABLE, DS, "v2", stats={"rows": 99})

    assert _pointer(lake) == before
    assert lake.partition(TABLE, DS) == lake.version_uri(TABLE, DS, "v1")
    assert lake.stats(TABLE, DS) == {"rows": 10}
    assert _versions_on_disk(lake) == {"v1", "v2"}  # nothing swept by a refused commit


def test_second_commit_keeps_previous_and_sweeps_older_and_orphans(lake):
    _write(lake, "v1")
    lake.commit(TABLE, DS, "v1")
    _write(lake, "v2")
    lake.commit(TABLE, DS, "v2")
    assert _versions_on_disk(lake) == {"v1", "v2"}  # v1 kept for in-flight readers
    assert _pointer(lake)["previous"] == "v1"

    _write(lake, "crashed", success=False)  # an orphan from a crashed writer
    _write(lake, "v3")
    lake.commit(TABLE, DS, "v3")

    assert _versions_on_disk(lake) == {"v2", "v3"}
    assert lake.current_version(TABLE, DS) == "v3"
    assert _pointer(lake)["previous"] == "v2"
    assert (Path(lake.version_uri(TABLE, DS, "v2")) / "part-0.parquet").exists()


def test_a_concurrent_writers_newer_version_survives_the_sweep(lake):
    """Versions are named by start time: one newer than the version being committed belongs to a writer that has
    not committed yet (a rerun racing this one); deleting it would publish a half-deleted partition."""
    _write(lake, "v1")
    lake.commit(TABLE, DS, "v1")
    _write(lake, "v9", success=False)  # still being written
    _write(lake, "v2")
    report = lake.commit(TABLE, DS, "v2")
    assert _versions_on_disk(lake) == {"v1", "v2", "v9"}
    assert "another writer" in report.kept["v9"]


def test_first_commit_sweeps_orphans(lake):
    _write(lake, "crashed-1", success=False)
    _write(lake, "crashed-2")  # complete but never committed
    _write(lake, "v1")
    lake.commit(TABLE, DS, "v1")
    assert _versions_on_disk(lake) == {"v1"}


def test_commits_do_not_touch_other_partitions_or_tables(lake):
    _write(lake, "a1", ds="2024-03-02")
    lake.commit(TABLE, "2024-03-02", "a1")
    _write(lake, "b1", table="features")
    lake.commit("features", DS, "b1")
    for version in ("v1", "v2", "v3"):
        _write(lake, version)
        lake.commit(TABLE, DS, version)
    assert lake.current_version(TABLE, "2024-03-02") == "a1"
    assert _versions_on_disk(lake, ds="2024-03-02") == {"a1"}
    assert lake.current_version("features", DS) == "b1"
    assert _versions_on_disk(lake, table="features") == {"b1"}


# -- atomicity ---------------------------------------------------------------------------------------------


def test_pointer_replace_leaves_no_temp_files(lake):
    for version in ("v1", "v2", "v3"):
        _write(lake, version)
        lake.commit(TABLE, DS, version)
    names = {p.name for p in Path(lake.partition_root(TABLE, DS)).iterdir()}
    assert names == {POINTER, "run=v2", "run=v3"}


def test_reader_never_sees_a_missing_version_while_a_writer_commits(lake):
    """A reader hammering ``partition()`` sees None before the first commit, then only complete versions.

    The writer waits for one full reader iteration after each commit: the lake keeps the previous version
    for exactly one more commit, which is the guarantee for a reader that resolved the pointer just before
    a flip (a reader slower than two commits is outside that contract).
    """
    commits = 60
    stop = threading.Event()
    iterations = [0]
    seen: list[str | None] = []
    problems: list[str] = []

    def reader() -> None:
        committed_once = False
        while not stop.is_set():
            try:
                uri = lake.partition(TABLE, DS)
            except Exception as exc:  # a torn pointer read would surface here
                problems.append(f"partition() raised {exc!r}")
                uri = None
            else:
                if uri is None:
                    if committed_once:
                        problems.append("None after a commit")
                elif not (Path(uri) / "_SUCCESS").exists():
                    problems.append(f"missing or incomplete version {uri}")
                else:
                    committed_once = True
                seen.append(uri)
            iterations[0] += 1

    def wait_for_reader() -> None:
        target = iterations[0] + 1
        deadline = time.monotonic() + 5
        while iterations[0] < target and time.monotonic() < deadline:
            time.sleep(0)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        wait_for_reader()
        for i in range(commits):
            version = f"v{i:03d}"
            _write(lake, version)
            if i % 7 == 0:
                _write(lake, f"crash{i:03d}", success=False)
            lake.commit(TABLE, DS, version, stats={"i": i})
            wait_for_reader()
    finally:
        stop.set()
        thread.join(timeout=10)

    assert not thread.is_alive()
    assert problems == []
    assert seen[0] is None
    committed = [uri for uri in seen if uri is not None]
    assert len(committed) >= commits
    assert committed[-1] == lake.version_uri(TABLE, DS, f"v{commits - 1:03d}")
    # versions only move forward
    assert committed == sorted(committed)
    assert _versions_on_disk(lake) == {f"v{commits - 2:03d}", f"v{commits - 1:03d}"}
    assert [p.name for p in Path(lake.partition_root(TABLE, DS)).iterdir() if p.name.startswith(".")] == []


# -- reading ranges and URIs ---------------------------------------------------------------------------------


def test_partitions_returns_only_committed_days(lake):
    days = day_range(dt.date(2024, 3, 1), dt.date(2024, 3, 5))
    _write(lake, "v1", ds=days[0])
    lake.commit(TABLE, days[0], "v1")
    _write(lake, "v1", ds=days[2])
    lake.commit(TABLE, days[2], "v1")
    _write(lake, "v1", ds=days[3], success=False)  # written, never committed
    _write(lake, "v1", ds=days[4])  # complete, never committed

    found = lake.partitions(TABLE, days)
    assert found == {
        days[0]: lake.version_uri(TABLE, days[0], "v1"),
        days[2]: lake.version_uri(TABLE, days[2], "v1"),
    }
    assert list(found) == [days[0], days[2]]
    assert lake.partitions(TABLE, []) == {}
    assert lake.partitions("features", days) == {}


def test_first_day_is_the_oldest_committed_partition(lake):
    assert lake.first_day(TABLE) is None
    _write(lake, "v1", ds="2024-02-27", success=False)  # a crashed writer's first day
    _write(lake, "v1", ds="2024-03-04")
    lake.commit(TABLE, "2024-03-04", "v1")
    _write(lake, "v1", ds="2024-03-02")
    lake.commit(TABLE, "2024-03-02", "v1")
    (Path(lake.table_uri(TABLE)) / "ds=not-a-day").mkdir()
    assert lake.first_day(TABLE) == dt.date(2024, 3, 2)
    assert lake.first_day("features") is None


def test_local_uris(tmp_path):
    lake = Lake(str(tmp_path) + "/")
    assert not lake.is_s3
    assert lake.table_uri(TABLE) == f"{tmp_path}/raw/transactions"
    assert lake.partition_root(TABLE, dt.date(2024, 3, 1)) == f"{tmp_path}/raw/transactions/ds=2024-03-01"
    assert lake.version_uri(TABLE, DS, "v1") == f"{tmp_path}/raw/transactions/ds=2024-03-01/run=v1"


@pytest.mark.parametrize("root", ["s3://bucket/lake", "s3://bucket/lake/", "s3a://bucket/lake"])
def test_s3_uris_use_s3a_for_spark(root):
    lake = Lake(root)
    assert lake.is_s3
    assert lake.version_uri(TABLE, DS, "v1") == "s3a://bucket/lake/raw/transactions/ds=2024-03-01/run=v1"
    assert lake.table_uri(TABLE) == "s3a://bucket/lake/raw/transactions"
    assert lake.partition_root(TABLE, DS).endswith("/lake/raw/transactions/ds=2024-03-01")


def test_new_version_ids_sort_by_time():
    ids = []
    for _ in range(5):
        ids.append(new_version())
        time.sleep(0.002)
    assert ids == sorted(ids)
    stamp = dt.datetime.strptime(ids[0].split("-")[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)
    assert abs(dt.datetime.now(dt.UTC) - stamp) < dt.timedelta(minutes=1)


def test_new_version_ids_are_unique():
    ids = [new_version() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    assert all("/" not in v and "=" not in v for v in ids)  # safe inside run=<version>


def test_day_range_is_inclusive():
    assert day_range(dt.date(2024, 2, 28), dt.date(2024, 3, 1)) == [
        dt.date(2024, 2, 28),
        dt.date(2024, 2, 29),
        dt.date(2024, 3, 1),
    ]
    assert day_range(dt.date(2024, 3, 1), dt.date(2024, 3, 1)) == [dt.date(2024, 3, 1)]
    assert day_range(dt.date(2024, 3, 2), dt.date(2024, 3, 1)) == []
    assert len(day_range(dt.date(2023, 12, 31), dt.date(2024, 12, 31))) == 367


# -- the object store's errors -------------------------------------------------------------------------------


class _Client:
    """Stands in for a boto3 client: only the endpoint an error message names."""

    meta = SimpleNamespace(endpoint_url="http://127.0.0.1:9000")


def _client_error(code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")


@pytest.mark.parametrize(
    ("error", "wording"),
    [
        ("unreachable", "is not reachable"),
        ("InvalidAccessKeyId", "refused the credentials"),
        ("SignatureDoesNotMatch", "refused the credentials"),
        ("403", "refused the credentials"),
        ("no-credentials", "has no usable credentials"),
        ("arrow-unreachable", "is not reachable"),
        ("arrow-refused", "refused the credentials"),
    ],
)
def test_object_store_failures_name_the_connection_and_endpoint(error, wording):
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from loopline.objectstore import ObjectStoreError, translate

    exc = {
        "unreachable": EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/b/k"),
        "no-credentials": NoCredentialsError(),
        "arrow-unreachable": OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7"),
        "arrow-refused": OSError("AWS Error ACCESS_DENIED during HeadObject operation"),
    }.get(error) or _client_error(error)
    translated = translate(exc, _Client(), "loopline_s3")
    assert isinstance(translated, ObjectStoreError)
    assert str(translated).startswith(f"S3 at http://127.0.0.1:9000 (Airflow connection loopline_s3) {wording}: ")


@pytest.mark.parametrize("code", ["NoSuchKey", "404", "NoSuchBucket"])
def test_other_object_store_errors_pass_through(code):
    from loopline.objectstore import translate

    assert translate(_client_error(code), _Client(), "loopline_s3") is None
    assert translate(FileNotFoundError("key"), _Client(), "loopline_s3") is None
    assert translate(ValueError("x"), _Client(), "loopline_s3") is None


def test_s3_block_reraises_translated_errors_and_passes_others(monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    from loopline import objectstore

    monkeypatch.setattr(objectstore, "client", lambda conn_id=None: _Client())
    unreachable = r"\(Airflow connection other\) is not reachable"
    with pytest.raises(objectstore.ObjectStoreError, match=unreachable) as exc, objectstore.s3("other"):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9000")
    assert isinstance(exc.value.__cause__, EndpointConnectionError)  # the original stays in the traceback
    with pytest.raises(KeyError), objectstore.s3("other"):
        raise KeyError("missing")


def test_lake_names_its_connection():
    assert Lake("s3://bucket/lake").aws_conn_id is None  # storage.aws_conn_id
    assert Lake("s3://bucket/lake", aws_conn_id="other").aws_conn_id == "other"


def test_without_the_amazon_provider_the_standard_aws_environment_is_used(monkeypatch):
    """The trainer's image has no Airflow: the lake is still read, through boto3's own environment."""
    from loopline import objectstore

    monkeypatch.setattr(objectstore, "_s3_hook_class", lambda: None)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    objectstore._client.cache_clear()
    try:
        assert objectstore.client("pod-without-airflow").meta.endpoint_url == "http://127.0.0.1:9"
        assert objectstore.arrow_filesystem("pod-without-airflow").type_name == "s3"
    finally:
        objectstore._client.cache_clear()
