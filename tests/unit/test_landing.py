"""Landing drop inspection on a local folder: completeness, file listing and whole-file checks."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import pytest

from loopline.landing import MARKER, FileCheck, Landing, ScanLimits, check_file

REQUIRED = ("transaction_id", "amount", "currency")
HEADER = b"transaction_id,amount,currency\n"
ROWS = b"t1,1.50,EUR\nt2,2.00,USD\nt3,9.99,GBP\n"
DS = "2024-03-01"


@pytest.fixture
def landing(tmp_path: Path) -> Landing:
    return Landing(str(tmp_path / "landing"))


def _drop(landing: Landing, name: str, data: bytes, kind: str = "transactions", ds: str = DS) -> tuple[str, int]:
    folder = Path(landing.day_uri(kind, ds))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return str(path), len(data)


def _check(landing: Landing, name: str, data: bytes, required: tuple[str, ...] = REQUIRED) -> FileCheck:
    uri, size = _drop(landing, name, data)
    return check_file(landing, uri, size, required)


# -- whole-file checks -------------------------------------------------------------------------------------


def test_plain_csv_is_ok_with_header_and_line_count(landing):
    check = _check(landing, "part-0.csv", HEADER + ROWS)
    assert check.ok
    assert check.reason is None
    assert check.header == list(REQUIRED)
    assert check.lines == 3
    assert check.extra_columns == []
    assert check.size == len(HEADER + ROWS)


def test_zero_byte_file_is_empty(landing):
    check = _check(landing, "part-0.csv", b"")
    assert not check.ok
    assert check.reason == "empty_file"
    assert check.lines == 0


def test_zero_size_is_trusted_without_opening_the_file(landing):
    # The listing's size decides: a 0-byte listing never opens the (possibly absent) object.
    check = check_file(landing, str(Path(landing.root) / "does-not-exist.csv"), 0, REQUIRED)
    assert check.reason == "empty_file"


def test_whitespace_only_first_line_is_empty(landing):
    check = _check(landing, "part-0.csv", b"\n")
    assert check.reason == "empty_file"


def test_header_only_file_is_ok_with_zero_lines(landing):
    check = _check(landing, "part-0.csv", HEADER)
    assert check.ok
    assert check.lines == 0
    assert check.header == list(REQUIRED)


def test_header_only_without_trailing_newline(landing):
    check = _check(landing, "part-0.csv", HEADER.rstrip(b"\n"))
    assert check.ok
    assert check.lines == 0


def test_last_line_without_newline_is_counted(landing):
    check = _check(landing, "part-0.csv", HEADER + ROWS.rstrip(b"\n"))
    assert check.ok
    assert check.lines == 3


def test_gzip_file_is_ok_with_line_count(landing):
    check = _check(landing, "part-0.csv.gz", gzip.compress(HEADER + ROWS))
    assert check.ok
    assert check.header == list(REQUIRED)
    assert check.lines == 3


def test_large_gzip_counts_every_line(landing):
    body = b"".join(f"t{i},{i}.00,EUR\n".encode() for i in range(50_000))
    check = _check(landing, "part-0.csv.gz", gzip.compress(HEADER + body))
    assert check.ok
    assert check.lines == 50_000


def test_gzip_of_nothing_is_empty(landing):
    data = gzip.compress(b"")
    assert len(data) > 0  # non-zero on disk, empty once decompressed
    check = _check(landing, "part-0.csv.gz", data)
    assert check.reason == "empty_file"


def test_truncated_gzip_is_quarantined(landing):
    body = b"".join(f"t{i},{i}.00,EUR\n".encode() for i in range(2_000))
    whole = gzip.compress(HEADER + body)
    check = _check(landing, "part-0.csv.gz", whole[: len(whole) // 2])
    assert not check.ok
    assert check.reason == "truncated_or_corrupt_gzip"


def test_gzip_cut_inside_its_header_is_quarantined(landing):
    check = _check(landing, "part-0.csv.gz", gzip.compress(HEADER + ROWS)[:5])
    assert check.reason == "truncated_or_corrupt_gzip"


def test_not_gzip_despite_extension_is_quarantined(landing):
    check = _check(landing, "part-0.csv.gz", HEADER + ROWS)
    assert check.reason == "truncated_or_corrupt_gzip"


def test_utf8_bom_is_stripped_from_the_header(landing):
    check = _check(landing, "part-0.csv", b"\xef\xbb\xbf" + HEADER + ROWS)
    assert check.ok
    assert check.header == list(REQUIRED)
    assert check.header[0] == "transaction_id"


def test_utf8_bom_inside_gzip(landing):
    check = _check(landing, "part-0.csv.gz", gzip.compress(b"\xef\xbb\xbf" + HEADER + ROWS))
    assert check.ok
    assert check.header == list(REQUIRED)


def test_crlf_line_endings(landing):
    data = (HEADER + ROWS).replace(b"\n", b"\r\n")
    check = _check(landing, "part-0.csv", data)
    assert check.ok
    assert check.header == list(REQUIRED)
    assert check.header[-1] == "currency"  # no stray \r on the last column
    assert check.lines == 3
    assert check.extra_columns == []


def test_header_names_are_normalised(landing):
    check = _check(landing, "part-0.csv", b' Transaction_ID ,"AMOUNT", Currency\n' + ROWS)
    assert check.ok
    assert check.header == list(REQUIRED)


def test_missing_columns_are_named_in_contract_order(landing):
    check = _check(landing, "part-0.csv", b"transaction_id,channel\nt1,pos\n")
    assert not check.ok
    assert check.reason == "missing_columns:amount,currency"
    assert check.lines == 1
    assert check.header == ["transaction_id", "channel"]


def test_extra_columns_are_reported_but_ok(landing):
    check = _check(landing, "part-0.csv", b"transaction_id,amount,note,currency,source\nt1,1,x,EUR,y\n")
    assert check.ok
    assert check.extra_columns == ["note", "source"]
    assert check.lines == 1


def test_duplicate_header_columns_are_quarantined(landing):
    check = _check(landing, "part-0.csv", b"transaction_id,amount,currency,amount\nt1,1,EUR,2\n")
    assert not check.ok
    assert check.reason == "duplicate_header_columns"


def test_duplicate_header_columns_differing_only_in_case(landing):
    check = _check(landing, "part-0.csv", b"transaction_id,amount,currency,Amount\nt1,1,EUR,2\n")
    assert check.reason == "duplicate_header_columns"


def test_undecodable_header_is_quarantined(landing):
    check = _check(landing, "part-0.csv", b"transaction_id,\xff\xfeamount,currency\nt1,1,EUR\n")
    assert not check.ok
    assert check.reason == "undecodable_header"
    assert check.header == []


def test_utf16_file_is_undecodable(landing):
    check = _check(landing, "part-0.csv", (HEADER + ROWS).decode().encode("utf-16"))
    assert check.reason == "undecodable_header"


def test_undecodable_data_rows_do_not_quarantine_the_file(landing):
    # Row-level problems are Spark's to judge one by one; only the header must decode.
    check = _check(landing, "part-0.csv", HEADER + b"t1,\xff,EUR\n")
    assert check.ok
    assert check.lines == 1


def test_filecheck_ok_follows_reason():
    assert FileCheck(uri="x", size=1).ok
    assert not FileCheck(uri="x", size=1, reason="empty_file").ok


# -- the drop: completeness and listing ----------------------------------------------------------------------


def test_uris(landing):
    root = landing.root
    assert landing.day_uri("labels", DS) == f"{root}/labels/ds={DS}"
    assert landing.marker_uri("labels", DS) == f"{root}/labels/ds={DS}/{MARKER}"
    assert not landing.is_s3
    assert landing.spark_uri(f"{root}/x.csv") == f"{root}/x.csv"
    assert Landing(root + "/").day_uri("labels", DS) == f"{root}/labels/ds={DS}"


def test_s3_uris_and_spark_scheme():
    landing = Landing("s3://bucket/landing/")
    assert landing.is_s3
    assert landing.marker_uri("transactions", DS) == f"s3://bucket/landing/transactions/ds={DS}/_SUCCESS"
    assert landing.spark_uri("s3://bucket/landing/a.csv") == "s3a://bucket/landing/a.csv"


def test_is_complete_follows_the_marker(landing):
    assert not landing.is_complete("transactions", DS)  # no folder at all
    _drop(landing, "part-0.csv", HEADER + ROWS)
    assert not landing.is_complete("transactions", DS)  # files but no marker yet
    _drop(landing, MARKER, b"")
    assert landing.is_complete("transactions", DS)
    assert not landing.is_complete("labels", DS)  # per kind
    assert not landing.is_complete("transactions", "2024-03-02")  # per day


def test_data_files_of_a_missing_day_is_empty(landing):
    assert landing.data_files("transactions", DS) == []


def test_data_files_ignores_marker_hidden_files_and_folders_and_sorts(landing):
    _drop(landing, "part-2.csv.gz", b"x" * 7)
    _drop(landing, "part-0.csv", b"abc")
    _drop(landing, "part-1.csv", b"")
    _drop(landing, MARKER, b"")
    _drop(landing, ".part-0.csv.crc", b"crc")
    _drop(landing, "_temporary_file", b"tmp")
    folder = Path(landing.day_uri("transactions", DS))
    (folder / "nested").mkdir()
    (folder / "nested" / "inner.csv").write_bytes(b"inner")
    _drop(landing, "other.csv", b"other", kind="labels")

    found = landing.data_files("transactions", DS)
    assert found == [
        (str(folder / "part-0.csv"), 3),
        (str(folder / "part-1.csv"), 0),
        (str(folder / "part-2.csv.gz"), 7),
    ]


def test_open_binary_reads_local_files(landing):
    uri, _ = _drop(landing, "part-0.csv", HEADER)
    with landing.open_binary(uri) as raw:
        assert raw.read() == HEADER


# -- object-store URIs and staging ---------------------------------------------------------------------------


def test_an_s3a_landing_is_read_as_s3():
    landing = Landing("s3a://bucket/landing")
    assert landing.is_s3
    assert landing.root == "s3://bucket/landing"  # listings and quarantine records name s3:// objects
    assert landing.spark_uri("s3://bucket/landing/a.csv") == "s3a://bucket/landing/a.csv"
    assert Landing("s3://bucket/landing", aws_conn_id="other").aws_conn_id == "other"


def test_check_file_scans_the_staged_copy_but_names_the_object(tmp_path):
    copy = tmp_path / "stage" / "part-0.csv.gz"
    copy.parent.mkdir()
    copy.write_bytes(gzip.compress(HEADER + ROWS)[:-10])  # a truncated upload, as staged
    uri = "s3://bucket/landing/transactions/ds=2024-03-01/part-0.csv.gz"
    check = check_file(Landing("s3://bucket/landing"), uri, copy.stat().st_size, REQUIRED, local=str(copy))
    assert check.uri == uri
    assert check.reason == "truncated_or_corrupt_gzip"
    copy.write_bytes(gzip.compress(HEADER + ROWS))
    check = check_file(Landing("s3://bucket/landing"), uri, copy.stat().st_size, REQUIRED, local=str(copy))
    assert check.ok
    assert check.lines == 3


def test_stage_folder_is_per_kind_and_day(tmp_path):
    landing = Landing("s3://bucket/landing")
    expected = tmp_path / "transactions" / f"ds={DS}"
    assert landing.stage_folder(str(tmp_path), "transactions", DS) == expected
    assert landing.stage_folder(f"file://{tmp_path}", "transactions", DS) == expected


def test_a_local_landing_is_never_staged(landing, tmp_path):
    with pytest.raises(ValueError, match="only an object-store landing is staged"):
        landing.stage(str(tmp_path / "stage"), "transactions", DS)


@pytest.mark.parametrize("value", ["s3://bucket/stage", "s3a://bucket/stage", "hdfs://nn/stage"])
def test_stage_uri_must_be_a_folder(value):
    from loopline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"storage\.stage_uri: .*not an object-store URI"):
        load_config(environ={"LOOPLINE__STORAGE__STAGE_URI": value})


def test_stage_uri_defaults_to_none_and_takes_a_folder():
    from loopline.config import load_config

    assert load_config(environ={}).storage.stage_uri is None
    assert load_config(environ={"LOOPLINE__STORAGE__STAGE_URI": "staging"}).storage.stage_uri == "staging"
    assert load_config(environ={"LOOPLINE__STORAGE__STAGE_URI": "file:///shared/stage"}).storage.stage_uri


# -- hostile drops: bounded scans --------------------------------------------------------------------------

SMALL = ScanLimits(max_line_bytes=4096, max_field_bytes=2048, max_decompressed_bytes=1 << 20)


def _bounded(landing: Landing, name: str, data: bytes, limits: ScanLimits = SMALL) -> tuple[FileCheck, int]:
    """The check under ``limits`` and the peak memory it allocated (tracemalloc)."""
    uri, size = _drop(landing, name, data)
    tracemalloc.start()
    try:
        check = check_file(landing, uri, size, REQUIRED, limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return check, peak


def test_a_line_past_the_limit_quarantines_the_file_without_loading_it(landing):
    huge = HEADER + b"t1," + b"9" * (50 * SMALL.max_line_bytes) + b",EUR\n" + ROWS
    check, peak = _bounded(landing, "part-0.csv", huge)
    assert check.reason == "line_too_long"
    assert peak < 4 * (1 << 20), f"the scan held {peak} bytes"  # the read buffer, never the line


def test_a_runaway_quote_past_the_field_limit_quarantines_the_file(landing):
    # An opened quote that never closes: Spark's multi-line reader would make the rest of the file one field.
    lines = [HEADER, b't1,"1.50,EUR\n', *[b"t9,1.00,EUR\n"] * 400]
    check, _ = _bounded(landing, "part-0.csv", b"".join(lines))
    assert check.reason == "field_too_long"


def test_quoted_fields_and_escaped_quotes_within_the_limits_pass(landing):
    data = HEADER + b't1,"1.50",EUR\nt2,"a ""quoted"" word\nacross lines",EUR\n' + b"t3,2.00,EUR\n" * 300
    check, _ = _bounded(landing, "part-0.csv", data)
    assert check.ok, check.reason
    assert check.lines == 303  # physical lines after the header: the quoted newline makes 302 records


def test_a_gzip_bomb_stops_at_the_decompressed_limit(landing, tmp_path):
    # 256 MiB of rows in a ~0.3 MiB gzip: the scan stops at the limit, holding its buffers only.
    source = tmp_path / "bomb.csv.gz"
    with gzip.GzipFile(source, "wb", mtime=0) as out:
        out.write(HEADER)
        for _ in range(256):
            out.write(b"t1,1.50,EUR\n" * ((1 << 20) // 12 + 1))
    check, peak = _bounded(landing, "part-0.csv.gz", source.read_bytes())
    assert check.reason == "decompressed_too_large"
    assert peak < 8 * (1 << 20), f"the scan held {peak} bytes"


def test_the_limits_come_from_the_configuration():
    from loopline.config import load_config

    cfg = load_config(environ={"LOOPLINE__VALIDATION__MAX_LINE_BYTES": "65536"})
    limits = ScanLimits.from_config(cfg.validation)
    assert limits.max_line_bytes == 65536
    assert limits.max_field_bytes == cfg.validation.max_field_bytes


def test_glob_characters_in_file_names_are_escaped_for_spark():
    from spark_jobs.ingest import spark_path

    assert spark_path("/l/ds=2024-03-01/part[1].csv") == r"/l/ds=2024-03-01/part\[1\].csv"
    assert spark_path("s3a://b/l/we{ird}*?.csv") == r"s3a://b/l/we\{ird\}\*\?.csv"
    assert spark_path("/plain/part-0.csv.gz") == "/plain/part-0.csv.gz"
