"""Landing, lake, staging and the sensors against an S3-compatible server (the session ``moto_server``).

Everything reaches the server through the ``loopline_s3`` Airflow connection the ``s3`` fixture exports
(``AIRFLOW_CONN_LOOPLINE_S3``), outside any task, as the Spark job CLIs do: the tests run with no ``AWS_*``
endpoint or credentials in the environment.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from loopline import objectstore
from loopline.config import load_config, loopline_home
from loopline.lake import FEATURES, POINTER, RAW_TRANSACTIONS, Lake
from loopline.landing import MARKER, DropChanged, Landing, check_file
from loopline.objectstore import ObjectStoreError
from loopline.orchestration.sensors import LANDING_FS_CONN_ID, LandingFileSensor, landing_sensor, published_sensor
from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS
from tests.conftest import free_port

pytestmark = pytest.mark.integration

DS = "2024-03-01"
HEADER = ",".join(TRANSACTION_COLUMNS).encode() + b"\n"
ROW = b"t1,2024-03-01T10:00:00,c1,m1,grocery,12.50,EUR,pos,DE,true\n"


@pytest.fixture
def bucket(s3) -> str:
    name = f"loopline-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_env(s3, monkeypatch, tmp_path):
    """No AWS endpoint, credentials or region in the environment: only the ``loopline_s3`` Airflow connection
    knows where moto is, so a test passes only if the code under test goes through that connection."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    # nor a developer's ~/.aws files or an instance-metadata probe
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert json.loads(os.environ["AIRFLOW_CONN_LOOPLINE_S3"])["extra"]["endpoint_url"] == s3.endpoint_url


def _connection(endpoint: str) -> str:
    """An ``aws`` Airflow connection (as ``AIRFLOW_CONN_*`` JSON) to the S3 server at ``endpoint``."""
    extra = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    connection = {"conn_type": "aws", "login": "testing", "extra": extra}
    connection["password"] = "testing"  # pragma: allowlist secret - moto accepts any key
    return json.dumps(connection)


@pytest.fixture
def s3_down(aws_env, monkeypatch) -> str:
    """The ``loopline_s3`` connection pointed at a closed loopback port; returns that endpoint."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there once the probe socket closed
    monkeypatch.setenv("AIRFLOW_CONN_LOOPLINE_S3", _connection(endpoint))
    return endpoint


def _put(s3, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


# -- Landing on S3 -------------------------------------------------------------------------------------------


@pytest.fixture
def drop(s3, bucket, aws_env):
    """A transactions drop for DS without its marker yet: the Landing, the bucket and the data files."""
    prefix = f"landing/transactions/ds={DS}"
    body = HEADER + ROW * 40
    whole_gz = gzip.compress(body)
    files = {
        f"{prefix}/part-0.csv": body,
        f"{prefix}/part-1.csv.gz": whole_gz,
        f"{prefix}/part-2.csv.gz": whole_gz[: len(whole_gz) // 2],  # truncated upload
        f"{prefix}/part-3.csv": b"",
        f"{prefix}/part-4.csv": b"transaction_id,amount\nt1,1\n",
    }
    for key, data in files.items():
        _put(s3, bucket, key, data)
    _put(s3, bucket, f"{prefix}/.part-0.csv.crc", b"crc")
    _put(s3, bucket, "landing/transactions/ds=2024-03-02/part-0.csv", body)  # next day, must not leak in
    _put(s3, bucket, f"landing/labels/ds={DS}/part-0.csv", b"x")  # other kind
    return Landing(f"s3://{bucket}/landing"), bucket, {f"s3://{bucket}/{k}": len(v) for k, v in files.items()}


def test_is_complete_follows_the_marker(s3, drop):
    landing, bucket, _ = drop
    assert landing.is_s3
    assert not landing.is_complete("transactions", DS)
    _put(s3, bucket, f"landing/transactions/ds={DS}/{MARKER}", b"")
    assert landing.is_complete("transactions", DS)
    assert not landing.is_complete("labels", DS)
    assert not landing.is_complete("transactions", "2024-03-02")


def test_is_complete_needs_the_exact_marker_key(s3, drop):
    landing, bucket, _ = drop
    _put(s3, bucket, f"landing/transactions/ds={DS}/{MARKER}.tmp", b"")
    assert not landing.is_complete("transactions", DS)


def test_data_files_lists_only_data_files_with_sizes(drop):
    landing, _, files = drop
    found = landing.data_files("transactions", DS)
    assert found == sorted(files.items())
    assert [uri.rsplit("/", 1)[-1] for uri, _ in found] == [
        "part-0.csv",
        "part-1.csv.gz",
        "part-2.csv.gz",
        "part-3.csv",
        "part-4.csv",
    ]
    assert landing.data_files("transactions", "2024-02-29") == []


def test_data_files_ignores_the_marker(s3, drop):
    landing, bucket, files = drop
    _put(s3, bucket, f"landing/transactions/ds={DS}/{MARKER}", b"")
    assert landing.data_files("transactions", DS) == sorted(files.items())


def test_files_uploaded_after_the_marker_are_named(s3, drop):
    landing, bucket, _ = drop
    _put(s3, bucket, f"landing/transactions/ds={DS}/{MARKER}", b"")
    assert landing.written_after_marker("transactions", DS) == []
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    _put(s3, bucket, f"landing/transactions/ds={DS}/part-9.csv", HEADER + ROW)
    assert landing.written_after_marker("transactions", DS) == [
        f"s3://{bucket}/landing/transactions/ds={DS}/part-9.csv"
    ]


def test_data_files_follows_every_page(s3, bucket, aws_env, monkeypatch):
    client = s3.client()
    for i in range(7):
        client.put_object(Bucket=bucket, Key=f"landing/labels/ds={DS}/part-{6 - i}.csv", Body=b"a" * i)
    client.put_object(Bucket=bucket, Key=f"landing/labels/ds={DS}/_SUCCESS", Body=b"")

    real = objectstore.client
    pages_served = []

    class SmallPages:
        """The connection's client, but the paginator serves pages of 2 keys (a drop of 1000s, cheaply)."""

        def __init__(self, conn_id=None):
            self._client = real(conn_id)

        def __getattr__(self, name):
            return getattr(self._client, name)

        def get_paginator(self, name):
            paginator = self._client.get_paginator(name)

            class Paginator:
                def paginate(self, **kwargs):
                    for page in paginator.paginate(**kwargs, PaginationConfig={"PageSize": 2}):
                        pages_served.append(page["KeyCount"])
                        yield page

            return Paginator()

    monkeypatch.setattr(objectstore, "client", SmallPages)
    found = Landing(f"s3://{bucket}/landing").data_files("labels", DS)
    assert len(pages_served) == 4
    assert found == [(f"s3://{bucket}/landing/labels/ds={DS}/part-{i}.csv", 6 - i) for i in range(7)]


def test_data_files_ignores_folder_placeholder_objects(s3, drop):
    landing, bucket, files = drop
    _put(s3, bucket, f"landing/transactions/ds={DS}/", b"")
    assert landing.data_files("transactions", DS) == sorted(files.items())


def test_data_files_ignores_files_in_hidden_subfolders(s3, drop):
    landing, bucket, files = drop
    _put(s3, bucket, f"landing/transactions/ds={DS}/_temporary/0/part-9.csv", HEADER + ROW)
    assert landing.data_files("transactions", DS) == sorted(files.items())


def _checks(landing: Landing, files: dict[str, int], names: tuple[str, ...]) -> dict:
    return {
        name: check_file(landing, uri, size, TRANSACTION_COLUMNS)
        for uri, size in files.items()
        if (name := uri.rsplit("/", 1)[-1]) in names
    }


def test_check_file_reads_gzip_through_open_binary(drop):
    landing, _, files = drop
    checks = _checks(landing, files, ("part-1.csv.gz", "part-2.csv.gz", "part-3.csv"))
    assert checks["part-1.csv.gz"].ok
    assert checks["part-1.csv.gz"].lines == 40
    assert checks["part-1.csv.gz"].header == list(TRANSACTION_COLUMNS)
    assert checks["part-2.csv.gz"].reason == "truncated_or_corrupt_gzip"
    assert checks["part-3.csv"].reason == "empty_file"


def test_check_file_reads_plain_csv_through_open_binary(drop):
    landing, _, files = drop
    checks = _checks(landing, files, ("part-0.csv", "part-4.csv"))
    assert checks["part-0.csv"].ok
    assert checks["part-0.csv"].lines == 40
    assert checks["part-0.csv"].header == list(TRANSACTION_COLUMNS)
    assert checks["part-4.csv"].reason.startswith("missing_columns:event_time,customer_id,")


def test_check_file_labels_with_bom_over_s3(s3, bucket, aws_env):
    key = f"landing/labels/ds={DS}/part-0.csv"
    data = b"\xef\xbb\xbf" + ",".join(LABEL_COLUMNS).encode() + b"\r\nt1,1,2024-03-01T00:00:00\r\n"
    _put(s3, bucket, key, data)
    check = check_file(Landing(f"s3://{bucket}/landing"), f"s3://{bucket}/{key}", len(data), LABEL_COLUMNS)
    assert check.ok
    assert check.header == list(LABEL_COLUMNS)
    assert check.lines == 1


def test_check_file_labels_with_bom_gzipped_over_s3(s3, bucket, aws_env):
    key = f"landing/labels/ds={DS}/part-0.csv.gz"
    data = gzip.compress(b"\xef\xbb\xbf" + ",".join(LABEL_COLUMNS).encode() + b"\r\nt1,1,2024-03-01T00:00:00\r\n")
    _put(s3, bucket, key, data)
    check = check_file(Landing(f"s3://{bucket}/landing"), f"s3://{bucket}/{key}", len(data), LABEL_COLUMNS)
    assert check.ok
    assert check.header == list(LABEL_COLUMNS)
    assert check.lines == 1


def test_open_binary_reads_the_object(drop):
    landing, _, files = drop
    uri = next(uri for uri in files if uri.endswith("part-0.csv"))
    body = landing.open_binary(uri)
    try:
        assert body.read() == HEADER + ROW * 40
    finally:
        body.close()


# -- Lake on S3 ----------------------------------------------------------------------------------------------


def test_lake_commit_writes_the_pointer_object(s3, bucket, aws_env):
    lake = Lake(f"s3://{bucket}/lake")
    assert lake.current_version(RAW_TRANSACTIONS, DS) is None
    assert lake.partition(RAW_TRANSACTIONS, DS) is None
    assert lake.stats(RAW_TRANSACTIONS, DS) == {}

    lake.commit(RAW_TRANSACTIONS, DS, "v1", stats={"rows": 40, "quarantined": 2})

    key = f"lake/raw/transactions/ds={DS}/{POINTER}"
    record = json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert record["version"] == "v1"
    assert record["previous"] is None
    assert record["stats"] == {"rows": 40, "quarantined": 2}
    assert lake.current_version(RAW_TRANSACTIONS, DS) == "v1"
    assert lake.partition(RAW_TRANSACTIONS, DS) == f"s3a://{bucket}/lake/raw/transactions/ds={DS}/run=v1"
    assert lake.stats(RAW_TRANSACTIONS, DS) == {"rows": 40, "quarantined": 2}


def test_lake_second_commit_records_previous_and_sweeps_older_objects(s3, bucket, aws_env):
    lake = Lake(f"s3://{bucket}/lake")
    client = s3.client()
    for version in ("v1", "v2", "v3"):
        client.put_object(Bucket=bucket, Key=f"lake/features/ds={DS}/run={version}/part-0.parquet", Body=b"x")
        lake.commit("features", DS, version, stats={"version": version})
    assert lake.current_version("features", DS) == "v3"
    assert lake.stats("features", DS) == {"version": "v3"}
    key = f"lake/features/ds={DS}/{POINTER}"
    assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["previous"] == "v2"
    # the commit sweeps the object store too: v1 is neither current, previous nor pinned
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lake/features/ds={DS}/run=")
    assert [item["Key"].split("/")[-2] for item in listed["Contents"]] == ["run=v2", "run=v3"]


def test_lake_partitions_over_s3(bucket, aws_env):
    lake = Lake(f"s3://{bucket}/lake")
    days = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
    lake.commit(RAW_TRANSACTIONS, days[1], "v9")
    assert lake.partitions(RAW_TRANSACTIONS, days) == {
        days[1]: f"s3a://{bucket}/lake/raw/transactions/ds=2024-03-02/run=v9"
    }


def test_lake_first_day_over_s3(s3, bucket, aws_env):
    lake = Lake(f"s3://{bucket}/lake")
    assert lake.first_day(RAW_TRANSACTIONS) is None
    s3.client().put_object(Bucket=bucket, Key="lake/raw/transactions/ds=2024-02-28/run=v1/part-0.parquet", Body=b"x")
    lake.commit(RAW_TRANSACTIONS, "2024-03-02", "v2")
    lake.commit(RAW_TRANSACTIONS, "2024-03-05", "v3")
    assert lake.first_day(RAW_TRANSACTIONS) == dt.date(2024, 3, 2)  # 02-28 was never committed


def test_lake_marks_and_copies_versions_of_a_multi_day_write_over_s3(s3, bucket, aws_env):
    """What a range backfill's partitioned write needs: which day folders it wrote, their markers, and an empty
    version copied to the days without rows."""
    lake, client = Lake(f"s3://{bucket}/lake"), s3.client()
    days = [dt.date(2024, 4, 1), dt.date(2024, 4, 2)]
    client.put_object(Bucket=bucket, Key="lake/features/ds=2024-04-01/run=v1/part-0.parquet", Body=b"rows")
    assert lake.version_written("features", days[0], "v1")
    assert not lake.version_written("features", days[1], "v2")
    lake.mark_written("features", days[0], "v1")
    lake.copy_version("features", (days[0], "v1"), (days[1], "v2"))
    listed = client.list_objects_v2(Bucket=bucket, Prefix="lake/features/ds=2024-04-02/run=v2/")
    assert sorted(item["Key"].rsplit("/", 1)[-1] for item in listed["Contents"]) == ["_SUCCESS", "part-0.parquet"]
    lake.commit("features", days[1], "v2")
    assert lake.partition("features", days[1]) == f"s3a://{bucket}/lake/features/ds=2024-04-02/run=v2"


# -- the Airflow landing sensor ------------------------------------------------------------------------------


def _s3_sensor(bucket: str):
    cfg = load_config(environ={"LOOPLINE__STORAGE__LANDING_URI": f"s3://{bucket}/landing"})
    return cfg, landing_sensor(cfg)


def _markers(root: str, ds: str = "{{ ds }}") -> list[str]:
    return [f"{root}/{kind}/ds={ds}/_SUCCESS" for kind in ("transactions", "labels")]


def test_s3_sensor_shape():
    cfg, sensor = _s3_sensor("bucket")
    assert isinstance(sensor, S3KeySensor)
    assert sensor.deferrable is True
    assert sensor.task_id == "wait_for_drop"
    assert sensor.aws_conn_id == "loopline_s3" == cfg.storage.aws_conn_id
    assert sensor.bucket_key == _markers("s3://bucket/landing")  # S3KeySensor waits for every key of a list
    assert sensor.timeout == cfg.validation.sensor_timeout_seconds
    assert sensor.poke_interval == cfg.validation.sensor_poke_seconds


def test_s3_sensor_pokes_every_marker_through_the_connection(s3, bucket, monkeypatch):
    # No AWS_* environment here: only the loopline_s3 connection knows the endpoint and credentials.
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    _, sensor = _s3_sensor(bucket)
    sensor.bucket_key = [key.replace("{{ ds }}", DS) for key in sensor.bucket_key]
    assert sensor.bucket_key == _markers(f"s3://{bucket}/landing", DS)

    _put(s3, bucket, f"landing/transactions/ds={DS}/part-0.csv", HEADER + ROW)
    assert sensor.poke(context={}) is False
    _put(s3, bucket, f"landing/transactions/ds={DS}/{MARKER}", b"")
    assert sensor.poke(context={}) is False  # labels still missing
    _put(s3, bucket, f"landing/labels/ds={DS}/{MARKER}", b"")
    assert sensor.poke(context={}) is True


def test_local_sensor_shape():
    cfg = load_config(environ={})
    sensor = landing_sensor(cfg)
    assert isinstance(sensor, FileSensor)
    assert isinstance(sensor, LandingFileSensor)
    assert not isinstance(sensor, S3KeySensor)
    assert sensor.deferrable is True
    assert sensor.task_id == "wait_for_drop"
    assert sensor.fs_conn_id == LANDING_FS_CONN_ID == "loopline_landing_fs"
    assert sensor.markers == _markers(f"{loopline_home()}/landing")
    assert "markers" in sensor.template_fields
    assert sensor.marker_path == sensor.filepath == sensor.markers[0]


def test_sensor_kwargs_override_defaults():
    sensor = landing_sensor(load_config(environ={}), ("labels",), task_id="custom", timeout=5)
    assert sensor.task_id == "custom"
    assert sensor.timeout == 5
    assert sensor.markers == _markers(f"{loopline_home()}/landing")[1:]


def test_timeout_message_names_the_markers():
    cfg, sensor = _s3_sensor("bucket")
    sensor.bucket_key = _markers("s3://bucket/landing", DS)
    error = sensor._explain(AirflowSensorTimeout("x"))
    assert isinstance(error, AirflowSensorTimeout)
    message = str(error)
    assert " or ".join(_markers("s3://bucket/landing", DS)) + " did not appear" in message
    assert str(dt.timedelta(seconds=cfg.validation.sensor_timeout_seconds)) in message  # 6:00:00
    assert "clear this task" in message
    assert message.endswith("(x)")


def test_local_timeout_message_names_the_missing_marker():
    sensor = landing_sensor(load_config(environ={}), ("labels",), timeout=90)
    message = str(sensor._explain(AirflowSensorTimeout("poke timed out")))
    assert f"{loopline_home()}/landing/labels/ds={{{{ ds }}}}/_SUCCESS did not appear within 0:01:30" in message
    assert "(poke timed out)" in message


# -- the Airflow connection, and what an operator sees when the store is down --------------------------------


def test_the_client_is_built_from_the_airflow_connection(s3, aws_env):
    assert not [name for name in os.environ if name.startswith("AWS_ENDPOINT")]
    client = objectstore.client()
    assert client.meta.endpoint_url == s3.endpoint_url
    assert client.meta.region_name == "us-east-1"
    assert objectstore.client("loopline_s3") is client  # built once per connection


def test_a_changed_connection_gets_a_new_client(s3, s3_down):
    assert objectstore.client().meta.endpoint_url == s3_down


def _unreachable(exc: pytest.ExceptionInfo, endpoint: str) -> str:
    message = str(exc.value)
    assert f"S3 at {endpoint} (Airflow connection loopline_s3) is not reachable" in message
    assert not isinstance(exc.value, AirflowFailException)  # an infrastructure error: Airflow retries it
    return message


def test_an_unreachable_landing_names_the_connection_and_endpoint(s3_down):
    landing = Landing("s3://loopline-landing/landing")
    with pytest.raises(ObjectStoreError) as exc:
        landing.is_complete("transactions", DS)
    _unreachable(exc, s3_down)
    with pytest.raises(ObjectStoreError) as exc:
        landing.data_files("transactions", DS)
    _unreachable(exc, s3_down)
    with pytest.raises(ObjectStoreError) as exc:
        landing.open_binary(f"s3://loopline-landing/landing/transactions/ds={DS}/part-0.csv")
    _unreachable(exc, s3_down)


def test_an_unreachable_lake_names_the_connection_and_endpoint(s3_down):
    lake = Lake("s3a://loopline-lake/lake")
    with pytest.raises(ObjectStoreError) as exc:
        lake.current_version(RAW_TRANSACTIONS, DS)
    _unreachable(exc, s3_down)
    with pytest.raises(ObjectStoreError) as exc:
        lake.commit(RAW_TRANSACTIONS, DS, "v1")
    _unreachable(exc, s3_down)
    with pytest.raises(ObjectStoreError) as exc:
        lake.first_day(RAW_TRANSACTIONS)
    _unreachable(exc, s3_down)
    with pytest.raises(ObjectStoreError) as exc:  # pyarrow's own S3 client, from the same connection
        lake.arrow_dataset(lake.version_uri(RAW_TRANSACTIONS, DS, "v1"))
    _unreachable(exc, s3_down)


def test_an_explicit_connection_id_is_used(s3, bucket, s3_down, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_S3", _connection(s3.endpoint_url))
    _put(s3, bucket, f"landing/labels/ds={DS}/{MARKER}", b"")
    assert Landing(f"s3://{bucket}/landing", aws_conn_id="other_s3").is_complete("labels", DS)
    with pytest.raises(ObjectStoreError) as exc:
        Landing(f"s3://{bucket}/landing").is_complete("labels", DS)
    _unreachable(exc, s3_down)


# -- staging an S3 drop for a Spark that cannot read S3 ------------------------------------------------------


def test_stage_copies_only_the_data_files_under_their_names(s3, drop, tmp_path):
    landing, bucket, files = drop
    _put(s3, bucket, f"landing/transactions/ds={DS}/{MARKER}", b"")
    staged = landing.stage(str(tmp_path / "stage"), "transactions", DS)
    folder = tmp_path / "stage" / "transactions" / f"ds={DS}"
    assert staged == {uri: str(folder / uri.rsplit("/", 1)[-1]) for uri in files}
    assert sorted(path.name for path in folder.iterdir()) == sorted(uri.rsplit("/", 1)[-1] for uri in files)
    client = s3.client()
    for uri, path in staged.items():
        assert Path(path).read_bytes() == client.get_object(Bucket=bucket, Key=uri.split("/", 3)[3])["Body"].read()
    assert not (tmp_path / "stage" / "labels").exists()  # per kind
    assert [p.name for p in folder.parent.iterdir()] == [f"ds={DS}"]  # no hidden work folder left


def test_stage_a_rerun_replaces_the_days_copy(s3, drop, tmp_path):
    landing, bucket, _ = drop
    stage = str(tmp_path / "stage")
    landing.stage(stage, "transactions", DS)
    folder = tmp_path / "stage" / "transactions" / f"ds={DS}"
    _put(s3, bucket, f"landing/transactions/ds={DS}/part-0.csv", HEADER + ROW)  # corrected upstream
    s3.client().delete_object(Bucket=bucket, Key=f"landing/transactions/ds={DS}/part-4.csv")
    staged = landing.stage(stage, "transactions", DS)
    assert (folder / "part-0.csv").read_bytes() == HEADER + ROW
    assert not (folder / "part-4.csv").exists()
    assert sorted(Path(path).name for path in staged.values()) == sorted(p.name for p in folder.iterdir())
    assert [p.name for p in folder.parent.iterdir()] == [f"ds={DS}"]


def test_stage_is_relative_to_loopline_home_through_the_config():
    from loopline.config import resolve_uri

    cfg = load_config(environ={"LOOPLINE__STORAGE__STAGE_URI": "staging"})
    assert resolve_uri(cfg.storage.stage_uri) == str(loopline_home() / "staging")
    assert load_config(environ={}).storage.stage_uri is None


def test_stage_checks_name_the_s3_object(drop, tmp_path):
    landing, _, files = drop
    staged = landing.stage(str(tmp_path / "stage"), "transactions", DS)
    checks = {
        uri.rsplit("/", 1)[-1]: check_file(landing, uri, size, TRANSACTION_COLUMNS, local=staged[uri])
        for uri, size in files.items()
    }
    truncated = checks["part-2.csv.gz"]
    assert truncated.reason == "truncated_or_corrupt_gzip"
    assert truncated.uri == f"s3://{landing.root.split('/')[2]}/landing/transactions/ds={DS}/part-2.csv.gz"
    assert [checks[name].lines for name in ("part-0.csv", "part-1.csv.gz") if checks[name].ok] == [40, 40]
    assert checks["part-3.csv"].reason == "empty_file"
    assert checks["part-4.csv"].reason.startswith("missing_columns:")


def test_stage_refuses_an_object_that_changed_since_the_listing(drop, tmp_path):
    landing, _, files = drop
    stage = tmp_path / "stage"
    landing.stage(str(stage), "transactions", DS)
    before = sorted(p.name for p in (stage / "transactions" / f"ds={DS}").iterdir())
    listed = [(uri, size + 1 if uri.endswith("part-1.csv.gz") else size) for uri, size in sorted(files.items())]
    with pytest.raises(DropChanged, match=r"part-1\.csv\.gz changed while it was staged"):
        landing.stage(str(stage), "transactions", DS, listed)
    # the previous copy stands, and no half-written folder is left beside it
    assert sorted(p.name for p in (stage / "transactions" / f"ds={DS}").iterdir()) == before
    assert [p.name for p in (stage / "transactions").iterdir()] == [f"ds={DS}"]


def test_stage_with_the_store_down_leaves_the_previous_copy(drop, tmp_path, monkeypatch):
    landing, _, files = drop
    stage = tmp_path / "stage"
    landing.stage(str(stage), "transactions", DS)
    folder = stage / "transactions" / f"ds={DS}"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_LOOPLINE_S3", _connection(endpoint))
    with pytest.raises(ObjectStoreError) as exc:
        landing.stage(str(stage), "transactions", DS, sorted(files.items()))
    _unreachable(exc, endpoint)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == [f"ds={DS}"]


def test_ingest_fails_before_writing_when_the_store_is_down(s3_down, tmp_path):
    from spark_jobs import ingest

    cfg = load_config(
        environ={
            "LOOPLINE__STORAGE__LANDING_URI": "s3://loopline-landing/landing",
            "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake"),
            "LOOPLINE__STORAGE__STAGE_URI": str(tmp_path / "stage"),
        }
    )
    with pytest.raises(ObjectStoreError) as exc:
        ingest.run(None, dt.date.fromisoformat(DS), cfg)  # no Spark: nothing may get as far as using it
    _unreachable(exc, s3_down)
    assert not (tmp_path / "lake").exists()


def test_ingest_stages_both_kinds_before_spark_runs(s3, bucket, aws_env, tmp_path, monkeypatch):
    """A store failing on the labels' copy fails the day before the transactions are read or written."""
    from spark_jobs import ingest

    for kind in ("transactions", "labels"):
        _put(s3, bucket, f"landing/{kind}/ds={DS}/part-0.csv", HEADER + ROW)
        _put(s3, bucket, f"landing/{kind}/ds={DS}/{MARKER}", b"")
    real = Landing.stage
    staged: list[Path] = []

    def stage(self, stage_root, kind, ds, files=None):
        if kind == "labels":
            raise ObjectStoreError("S3 went away")
        copies = real(self, stage_root, kind, ds, files)
        staged.extend(Path(path) for path in copies.values())
        return copies

    monkeypatch.setattr(Landing, "stage", stage)
    cfg = load_config(
        environ={
            "LOOPLINE__STORAGE__LANDING_URI": f"s3://{bucket}/landing",
            "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake"),
            "LOOPLINE__STORAGE__STAGE_URI": str(tmp_path / "stage"),
        }
    )
    with pytest.raises(ObjectStoreError, match="S3 went away"):
        ingest.run(None, dt.date.fromisoformat(DS), cfg)  # Spark would be the next thing used
    assert [path.name for path in staged] == ["part-0.csv"]  # the transactions were staged first
    assert staged[0].is_relative_to(tmp_path / "stage")
    assert not any((tmp_path / "stage").iterdir()), "the run's staged copies are removed, also on failure"
    assert not (tmp_path / "lake").exists()


# -- the lake through pyarrow --------------------------------------------------------------------------------


def test_arrow_dataset_reads_through_the_connection(s3, bucket, aws_env):
    lake = Lake(f"s3a://{bucket}/lake")
    buffer = io.BytesIO()
    pq.write_table(pa.table({"transaction_id": ["t1", "t2", "t3"]}), buffer)
    prefix = f"lake/{FEATURES}/ds={DS}/run=v1"
    _put(s3, bucket, f"{prefix}/part-0.parquet", buffer.getvalue())
    _put(s3, bucket, f"{prefix}/_SUCCESS", b"")
    dataset = lake.arrow_dataset(lake.version_uri(FEATURES, DS, "v1"))
    assert dataset.count_rows() == 3
    assert dataset.to_table().column("transaction_id").to_pylist() == ["t1", "t2", "t3"]


# -- the published-partition sensor of an s3a:// lake --------------------------------------------------------


def test_published_sensor_of_an_s3a_lake_pokes_the_pointer(s3, bucket, aws_env):
    cfg = load_config(environ={"LOOPLINE__STORAGE__LAKE_URI": f"s3a://{bucket}/lake"})
    sensor = published_sensor(cfg, FEATURES, "wait_for_features")
    assert isinstance(sensor, S3KeySensor)
    assert sensor.bucket_key == f"s3://{bucket}/lake/{FEATURES}/ds={{{{ ds }}}}/{POINTER}"
    sensor.bucket_key = sensor.bucket_key.replace("{{ ds }}", DS)  # as rendered for the run
    assert sensor.poke(context={}) is False
    Lake(f"s3a://{bucket}/lake").commit(FEATURES, DS, "v1")  # writes the _CURRENT object
    assert sensor.poke(context={}) is True


# -- the whole ingest of a staged S3 drop --------------------------------------------------------------------


@pytest.mark.spark
def test_ingest_of_a_staged_s3_drop_names_the_s3_objects(spark, s3, drop, tmp_path):
    landing, bucket, _ = drop
    labels = ",".join(LABEL_COLUMNS).encode() + b"\nt1,1,2024-03-01T12:00:00Z\n"
    _put(s3, bucket, f"landing/labels/ds={DS}/part-0.csv", labels)
    _put(s3, bucket, f"landing/transactions/ds={DS}/{MARKER}", b"")
    _put(s3, bucket, f"landing/labels/ds={DS}/{MARKER}", b"")
    # one good row and one without a timezone (row quarantine), beside drop's file-level breakages
    good = ROW.replace(b"2024-03-01T10:00:00", b"2024-03-01T10:00:00Z")
    _put(s3, bucket, f"landing/transactions/ds={DS}/part-0.csv", HEADER + good + ROW.replace(b"t1,", b"t2,"))
    from pyspark.sql import functions as F

    from loopline.lake import QUARANTINE_TRANSACTIONS
    from spark_jobs import ingest

    cfg = load_config(
        environ={
            "LOOPLINE__STORAGE__LANDING_URI": landing.root,
            "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake"),
            "LOOPLINE__STORAGE__STAGE_URI": str(tmp_path / "stage"),
        }
    )
    day = dt.date.fromisoformat(DS)
    result = ingest.run(spark, day, cfg)
    tx = result["transactions"]
    assert tx["files"] == 5
    assert tx["files_quarantined"] == 3  # truncated gzip, empty file, missing columns
    assert tx["rows_written"] == 1  # part-0's good row; part-1.csv.gz's 40 rows have no timezone
    assert tx["quarantined_by_reason"]["event_time_without_timezone"] == 41
    assert not any((tmp_path / "stage").iterdir()), "the staged copies are removed once the day is written"

    lake = Lake(str(tmp_path / "lake"))
    quarantined = spark.read.parquet(lake.partition(QUARANTINE_TRANSACTIONS, day))
    sources = {row.source_file: row.reason for row in quarantined.select("source_file", "reason").distinct().collect()}
    prefix = f"s3://{bucket}/landing/transactions/ds={DS}"
    assert sources[f"{prefix}/part-2.csv.gz"] == "truncated_or_corrupt_gzip"
    assert sources[f"{prefix}/part-3.csv"] == "empty_file"
    assert sources[f"{prefix}/part-0.csv"] == "event_time_without_timezone"  # a row's record, too
    assert not quarantined.where(~F.col("source_file").startswith("s3://")).count()
    raw = spark.read.parquet(lake.version_uri(RAW_TRANSACTIONS, day, result["version"]))
    assert {row.source_file for row in raw.select("source_file").collect()} == {f"{prefix}/part-0.csv"}
