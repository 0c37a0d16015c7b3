"""Landing, lake and the landing sensor against an S3-compatible server (the session ``moto_server``).

``Landing`` and ``Lake`` use boto3's default client, configured here through the standard AWS environment;
the Airflow sensor uses the ``loopline_s3`` connection the ``s3`` fixture exports.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
import uuid

import pytest
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowSensorTimeout

import loopline.landing as landing_module
from loopline.config import load_config, loopline_home
from loopline.lake import POINTER, RAW_TRANSACTIONS, Lake
from loopline.landing import MARKER, Landing, check_file
from loopline.orchestration.sensors import LANDING_FS_CONN_ID, LandingFileSensor, landing_sensor
from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS

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
    """boto3's default client pointed at moto, isolated from any developer AWS config."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


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

    real = landing_module._s3
    pages_served = []

    class SmallPages:
        """boto3's default client, but the paginator serves pages of 2 keys (a drop of 1000s, cheaply)."""

        def __init__(self):
            self._client = real()

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

    monkeypatch.setattr(landing_module, "_s3", SmallPages)
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


def test_lake_second_commit_records_previous_and_keeps_objects(s3, bucket, aws_env):
    lake = Lake(f"s3://{bucket}/lake")
    client = s3.client()
    for version in ("v1", "v2", "v3"):
        client.put_object(Bucket=bucket, Key=f"lake/features/ds={DS}/run={version}/part-0.parquet", Body=b"x")
        lake.commit("features", DS, version, stats={"version": version})
    assert lake.current_version("features", DS) == "v3"
    assert lake.stats("features", DS) == {"version": "v3"}
    key = f"lake/features/ds={DS}/{POINTER}"
    assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["previous"] == "v2"
    # object stores are swept by a lifecycle rule, not by commit
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lake/features/ds={DS}/run=")["KeyCount"]
    assert listed == 3


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
    assert sensor.retries == 0


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
