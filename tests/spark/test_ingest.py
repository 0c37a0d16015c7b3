"""The Spark ingest job on hand-made landing drops: every way a drop breaks the contract is counted."""

from __future__ import annotations

import datetime as dt
import gzip
import os
from pathlib import Path

import pytest

from loopline import lake as tables
from loopline.config import load_config
from loopline.lake import Lake
from spark_jobs import ingest

pytestmark = pytest.mark.spark

DS = dt.date(2026, 3, 2)
HEADER = (
    "transaction_id,event_time,customer_id,merchant_id,merchant_category,amount,currency,channel,country,card_present"
)


def row(tid: str, **over: str) -> str:
    fields = {
        "transaction_id": tid,
        "event_time": "2026-03-02T10:00:00Z",
        "customer_id": "c1",
        "merchant_id": "m1",
        "merchant_category": "grocery",
        "amount": "12.50",
        "currency": "EUR",
        "channel": "pos",
        "country": "DE",
        "card_present": "true",
    }
    fields.update(over)
    return ",".join(fields[c] for c in HEADER.split(","))


GOOD = [row(f"t{i}", customer_id=f"c{i % 3}", event_time=f"2026-03-02T1{i}:00:00Z") for i in range(5)]
BAD = {
    "bad_amount": [row("b1", amount="abc"), row("b2", amount="NaN"), row("b3", amount="inf")],
    "non_positive_amount": [row("b4", amount="-5.00"), row("b5", amount="0")],
    "amount_too_large": [row("b6", amount="250000.00")],
    "unknown_currency": [row("b7", currency="XYZ")],
    "unknown_channel": [row("b8", channel="mail")],
    "bad_country": [row("b9", country="Germany")],
    "bad_card_present": [row("b10", card_present="yes")],
    "event_time_without_timezone": [row("b11", event_time="2026-03-02T10:00:00")],
    "event_time_after_drop_day": [row("b12", event_time="2026-03-05T10:00:00Z")],
    "event_time_before_drop_day": [row("b13", event_time="2026-03-01T23:59:59Z")],
    "bad_event_time": [row("b14", event_time="yesterday")],
    "missing_customer_id": [row("b15", customer_id="")],
    "malformed_row": [row("b16") + ",surplus"],
}


def write(path: Path, text: str | bytes, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


@pytest.fixture
def drop(tmp_path: Path):
    landing = tmp_path / "landing"
    day = landing / "transactions" / f"ds={DS}"
    bad_rows = [r for rows in BAD.values() for r in rows]
    conflicting = [row("dup", amount="10.00"), row("dup", amount="11.00")]
    main = [
        HEADER,
        *GOOD,
        GOOD[0],
        *bad_rows,
        *conflicting,
        row("q1", merchant_category='"grocery\nstore"'),
    ]  # a quoted newline is one valid row
    write(day / "part-0.csv", "\n".join(main) + "\n")
    write(
        day / "part-1.csv.gz",
        "\n".join([HEADER, row("g1"), row("g2", currency="USD", amount="100.00")]) + "\n",
        gz=True,
    )
    write(day / "part-2-empty.csv", "")
    whole = gzip.compress(("\n".join([HEADER] + [row(f"x{i}") for i in range(400)]) + "\n").encode())
    write(day / "part-3-truncated.csv.gz", whole[: len(whole) // 2])
    no_amount = HEADER.replace(",amount", "")
    write(day / "part-4-missing.csv", f"{no_amount}\nm1,2026-03-02T10:00:00Z,c1,m1,grocery,EUR,pos,DE,true\n")
    write(day / "part-5-extra.csv", f"{HEADER},note\n{row('e1')},hello\n")
    write(day / "part-6-bom.csv", "\ufeff" + f"{HEADER}\n{row('bom1')}\n")
    write(
        day / "part-7-latin1.csv",
        f"{HEADER}\n".encode() + row("enc1", merchant_category="caf\xe9").encode("latin-1") + b"\n",
    )
    (day / "_SUCCESS").touch()
    labels = landing / "labels" / f"ds={DS}"
    write(
        labels / "part-0.csv",
        "transaction_id,is_fraud,reported_at\n"
        "t0,1,2026-03-02T08:00:00Z\nt1,0,2026-03-02T09:00:00Z\nt2,2,2026-03-02T09:00:00Z\n"
        "t3,0,2026-03-02T09:00:00\nunknown-tx,0,2026-03-02T09:00:00Z\n",
    )
    (labels / "_SUCCESS").touch()
    return load_config(
        environ={"LOOPLINE__STORAGE__LANDING_URI": str(landing), "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake")}
    )


def _rows(spark, uri: str) -> list[tuple]:
    return sorted((tuple(r) for r in spark.read.parquet(uri).collect()), key=repr)


def test_every_broken_row_is_counted_and_valid_rows_kept(spark, drop):
    result = ingest.run(spark, DS, drop)
    tx = result["transactions"]
    expected = {reason: len(rows) for reason, rows in BAD.items()}
    expected |= {
        "conflicting_duplicate_id": 2,
        "empty_file": 0,
        "truncated_or_corrupt_gzip": 0,
        "missing_columns": 1,
        "encoding_error": 1,
    }
    by_reason = dict(tx["quarantined_by_reason"])
    truncated = by_reason.pop("truncated_or_corrupt_gzip")
    assert truncated == 0  # the scan stops at the cut: the file is quarantined whole, lines unknown
    expected.pop("truncated_or_corrupt_gzip")
    assert by_reason == expected
    valid_ids = {f"t{i}" for i in range(5)} | {"q1", "g1", "g2", "e1", "bom1"}
    assert tx["rows_written"] == len(valid_ids)
    assert tx["duplicates_dropped"] == 1
    assert tx["files"] == 8
    assert tx["files_quarantined"] == 3
    assert tx["extra_columns"] == ["note"]
    assert tx["rows_read"] == tx["rows_written"] + tx["duplicates_dropped"] + tx["rows_quarantined"]

    lake = Lake(drop.storage.lake_uri)
    raw = spark.read.parquet(lake.version_uri(tables.RAW_TRANSACTIONS, DS, result["version"]))
    assert {r.transaction_id for r in raw.collect()} == valid_ids
    g2 = raw.where("transaction_id = 'g2'").collect()[0]
    assert g2.amount == 100.0
    assert g2.amount_eur == 92.0  # USD normalised to EUR
    assert g2.card_present is True
    assert str(g2.event_time.date()) == "2026-03-02"
    assert raw.where("transaction_id = 'q1'").collect()[0].merchant_category == "grocery\nstore"

    # The quarantine is committed at once, row by row with reasons; whole files appear once each.
    quarantine = spark.read.parquet(lake.partition(tables.QUARANTINE_TRANSACTIONS, DS))
    reasons = [r.reason for r in quarantine.collect()]
    assert reasons.count("bad_amount") == 3
    # the tally observed during the write agrees with what was written: a row per row, one per whole file
    assert len(reasons) == tx["rows_quarantined"] - expected["missing_columns"] + tx["files_quarantined"]
    assert sorted(r for r in reasons if r.startswith(("empty", "truncated", "missing_col"))) == [
        "empty_file",
        "missing_columns:amount",
        "truncated_or_corrupt_gzip",
    ]
    malformed = quarantine.where("reason = 'malformed_row'").collect()[0]
    assert "surplus" in malformed.raw_record

    labels = result["labels"]
    assert labels["quarantined_by_reason"] == {"bad_is_fraud": 1, "reported_at_without_timezone": 1}
    assert labels["rows_written"] == 3
    assert labels["labels_matched"] == 2  # t0, t1; unknown-tx stays in raw labels, counted as unmatched
    assert labels["labels_unmatched"] == 1

    # Nothing of the raw layer is visible before publish.
    assert lake.partition(tables.RAW_TRANSACTIONS, DS) is None
    ingest.publish(DS, result["tables"], cfg=drop)
    assert lake.partition(tables.RAW_TRANSACTIONS, DS).endswith(result["version"])


def test_rerun_gives_identical_partitions(spark, drop):
    lake = Lake(drop.storage.lake_uri)
    contents = []
    for _ in range(3):
        result = ingest.run(spark, DS, drop)
        ingest.publish(DS, result["tables"], cfg=drop)
        contents.append(
            {
                table: _rows(spark, lake.partition(table, DS))
                for table in ingest.RAW_LAYER
                if table != tables.CUSTOMER_DAILY
            }
            | {"counts": {k: v for k, v in result.items() if k in ("transactions", "labels")}}
        )
    assert contents[0] == contents[1] == contents[2]


def test_incomplete_drop_names_the_missing_marker(spark, drop):
    marker = Path(drop.storage.landing_uri) / "labels" / f"ds={DS}" / "_SUCCESS"
    marker.unlink()
    with pytest.raises(ingest.DropIncomplete, match=str(marker)):
        ingest.run(spark, DS, drop)


@pytest.fixture
def odd_drop(tmp_path: Path):
    """The rest of the bad-input corpus: wrong delimiter, a huge single line, ids repeated across files,
    yesterday's rows replayed in today's drop."""
    landing = tmp_path / "landing"
    day = landing / "transactions" / f"ds={DS}"
    write(day / "part-0.csv", "\n".join([HEADER, row("k1"), row("k2"), row("same"), row("clash", amount="1.00")]))
    write(day / "part-1.csv", "\n".join([HEADER, row("same"), row("clash", amount="2.00"), row("k3")]) + "\n")
    write(day / "part-2-semicolon.csv", "\n".join([HEADER.replace(",", ";"), row("s1").replace(",", ";")]) + "\n")
    huge = row("h1", merchant_id="m" * 2_000_000)  # one 2 MB line
    write(day / "part-3-huge.csv", "\n".join([HEADER, huge, row("k4")]) + "\n")
    replayed = row("yesterday-1", event_time="2026-03-01T22:00:00Z")  # the previous day's file sent again
    write(day / "part-4-replay.csv", "\n".join([HEADER, replayed]) + "\n")
    (day / "_SUCCESS").touch()
    labels = landing / "labels" / f"ds={DS}"
    write(labels / "part-0.csv", "transaction_id,is_fraud,reported_at\nk1,0,2026-03-02T08:00:00Z\n")
    (labels / "_SUCCESS").touch()
    return load_config(
        environ={"LOOPLINE__STORAGE__LANDING_URI": str(landing), "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake")}
    )


def test_the_rest_of_the_corpus_is_counted_and_valid_rows_kept(spark, odd_drop):
    result = ingest.run(spark, DS, odd_drop)
    tx = result["transactions"]
    assert dict(tx["quarantined_by_reason"]) == {
        "wrong_delimiter": 1,  # the file, with its one data line
        "field_too_long": 1,
        "conflicting_duplicate_id": 2,  # same id, different content, in two files: both kept aside
        "event_time_before_drop_day": 1,
    }
    assert tx["duplicates_dropped"] == 1  # "same" arrived twice, identical: one copy kept
    assert tx["rows_written"] == 5
    assert tx["rows_read"] == tx["rows_written"] + tx["duplicates_dropped"] + tx["rows_quarantined"]
    lake = Lake(odd_drop.storage.lake_uri)
    raw = spark.read.parquet(lake.version_uri(tables.RAW_TRANSACTIONS, DS, result["version"]))
    assert {r.transaction_id for r in raw.collect()} == {"k1", "k2", "k3", "k4", "same"}
    quarantine = spark.read.parquet(lake.version_uri(tables.QUARANTINE_TRANSACTIONS, DS, result["version"]))
    assert quarantine.where("reason = 'wrong_delimiter:semicolon'").count() == 1  # the file, named
    huge = quarantine.where("reason = 'field_too_long'").collect()[0]
    assert len(huge.raw_record) > 2_000_000  # kept whole for whoever fixes the producer


def test_files_written_after_the_marker_stop_the_ingest(spark, odd_drop):
    day = Path(odd_drop.storage.landing_uri) / "transactions" / f"ds={DS}"
    late = day / "part-9-late.csv"
    write(late, "\n".join([HEADER, row("late1")]) + "\n")
    marker = day / "_SUCCESS"
    stamp = marker.stat().st_mtime_ns
    os.utime(late, ns=(stamp + 1_000_000_000, stamp + 1_000_000_000))  # arrived a second after the marker
    with pytest.raises(ingest.DropIncomplete, match=r"changed after its _SUCCESS marker: .*part-9-late\.csv"):
        ingest.run(spark, DS, odd_drop)
    os.utime(marker, ns=(stamp + 2_000_000_000, stamp + 2_000_000_000))  # the producer marks the drop again
    assert ingest.run(spark, DS, odd_drop)["transactions"]["rows_written"] == 6


def test_quarantine_reasons_follow_the_rules(spark):
    labels = ingest.row_reasons("labels")
    assert labels[0] == "malformed_row"
    assert labels[-1] == "conflicting_duplicate_id"
    assert "reported_at_without_timezone" in labels
    transactions = ingest.row_reasons("transactions")
    assert set(BAD) <= set(transactions)  # every broken row the corpus holds has its reason
    assert len(set(transactions)) == len(transactions)


def test_duplicates_are_judged_on_every_validated_column(spark):
    from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS

    for kind, columns, validate in (
        ("transactions", TRANSACTION_COLUMNS, ingest.validate_transactions),
        ("labels", LABEL_COLUMNS, ingest.validate_labels),
    ):
        raw = spark.createDataFrame([], ", ".join(f"{c} string" for c in (*columns, ingest.CORRUPT, "source_file")))
        validated = [c for c in validate(raw, DS).columns if c not in ("source_file", "reason", "raw_record")]
        assert validated == list(ingest.CONTENT_COLUMNS[kind])


def test_hostile_files_are_quarantined_whole_and_the_rest_is_kept(spark, tmp_path):
    """File names with glob characters read exactly themselves; a line past the limit and a gzip bomb are
    quarantined whole before Spark reads them (a small limit here stands for a multi-gigabyte line)."""
    landing = tmp_path / "landing"
    day = landing / "transactions" / f"ds={DS}"
    write(day / "part[1].csv", "\n".join([HEADER, row("g1"), row("g2")]) + "\n")
    write(day / "part1.csv", "\n".join([HEADER, row("h1")]) + "\n")  # what the glob part[1] would match
    write(day / "we{ird}*.csv", "\n".join([HEADER, row("w1")]) + "\n")
    write(day / "part-huge.csv", "\n".join([HEADER, row("x1", merchant_id="m" * 200_000), row("x2")]) + "\n")
    write(day / "part-bomb.csv.gz", HEADER + "\n" + (row("z1") + "\n") * 40_000, gz=True)
    (day / "_SUCCESS").touch()
    labels = landing / "labels" / f"ds={DS}"
    write(labels / "part-0.csv", "transaction_id,is_fraud,reported_at\n")
    (labels / "_SUCCESS").touch()
    cfg = load_config(
        environ={
            "LOOPLINE__STORAGE__LANDING_URI": str(landing),
            "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake"),
            "LOOPLINE__VALIDATION__MAX_LINE_BYTES": "65536",
            "LOOPLINE__VALIDATION__MAX_DECOMPRESSED_BYTES": str(2**20),
        }
    )
    result = ingest.run(spark, DS, cfg)
    tx = result["transactions"]
    lake = Lake(cfg.storage.lake_uri)
    raw = spark.read.parquet(lake.version_uri(tables.RAW_TRANSACTIONS, DS, result["version"]))
    assert sorted(r.transaction_id for r in raw.collect()) == ["g1", "g2", "h1", "w1"]
    quarantine = spark.read.parquet(lake.version_uri(tables.QUARANTINE_TRANSACTIONS, DS, result["version"]))
    whole = {Path(r.source_file).name: r.reason for r in quarantine.where("reason like '%_too_%'").collect()}
    assert whole == {"part-huge.csv": "line_too_long", "part-bomb.csv.gz": "decompressed_too_large"}
    assert tx["files_quarantined"] == 2
    assert tx["duplicates_dropped"] == 0


def test_a_lost_row_tally_is_counted_again_from_the_cached_rows(spark, drop, monkeypatch, caplog):
    """Spark Connect may send a write's observed metrics back empty (a loaded server): the counts come from the
    cached rows instead, equal to the observed ones, and the day still balances."""
    observed = ingest.run(spark, DS, drop)

    from pyspark.sql.connect.observation import Observation  # what pyspark.sql.Observation is on Spark Connect

    monkeypatch.setattr(Observation, "get", property(lambda self: {}))
    caplog.clear()
    recounted = ingest.run(spark, DS, drop)
    assert "transactions: the write's row tally came back empty" in caplog.text
    assert "labels: the write's row tally came back empty" in caplog.text
    for kind in ("transactions", "labels"):
        assert recounted[kind] == observed[kind], kind
    tx = recounted["transactions"]
    assert tx["rows_read"] == tx["rows_written"] + tx["duplicates_dropped"] + tx["rows_quarantined"]


def test_days_ingested_together_equal_each_day_alone(spark, tmp_path: Path):
    """run_days (a range backfill's chunk) against one run per day committed in order: every raw, quarantine
    and derived table row for row, and the same counts, on drops with duplicates, conflicting ids, a row of
    another day and labels that match the transactions of earlier days."""
    import pandas as pd

    from loopline.synth import generate

    start = dt.date(2026, 3, 1)
    days = [start + dt.timedelta(days=i) for i in range(3)]
    landing = tmp_path / "landing"
    generate(start, 3, landing, transactions_per_day=200, seed=11)
    part = next((landing / "transactions" / f"ds={days[1]}").glob("*.csv"))
    lines = part.read_text().splitlines()
    other_day = next((landing / "transactions" / f"ds={days[0]}").glob("*.csv")).read_text().splitlines()[1]
    header = lines[0].split(",")
    conflicting = lines[2].split(",")
    conflicting[header.index("amount")] = "999.99"
    # an exact duplicate (dropped), the same id with other content (quarantined), a row of the previous day
    part.write_text("\n".join([*lines, lines[1], ",".join(conflicting), other_day]) + "\n")
    (part.parent / "_SUCCESS").touch()
    raw_tables = (*ingest.RAW_LAYER, tables.QUARANTINE_TRANSACTIONS, tables.QUARANTINE_LABELS)

    def config(lake: str):
        environ = {"LOOPLINE__STORAGE__LANDING_URI": str(landing), "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / lake)}
        return load_config(environ=environ)

    alone, together = config("alone"), config("together")
    counts = {}
    for day in days:
        counts[day] = ingest.run(spark, day, alone)
        ingest.publish(day, counts[day]["tables"], cfg=alone)
    chunk = ingest.run_days(spark, days, together)
    lake = Lake(str(tmp_path / "together"))
    assert all(lake.partition(tables.QUARANTINE_TRANSACTIONS, day) is None for day in days)  # the caller commits
    for day in days:
        ingest.commit_quarantine(day, chunk[day], together)
        ingest.publish(day, chunk[day]["tables"], cfg=together)
        for kind in ("transactions", "labels"):
            assert chunk[day][kind] == counts[day][kind], (day, kind)
        for table in raw_tables:
            frames = [
                pd.read_parquet(Lake(str(tmp_path / name)).partition(table, day)) for name in ("alone", "together")
            ]
            ours, theirs = (f.sort_values(list(f.columns)).reset_index(drop=True) for f in frames)
            assert ours.equals(theirs), f"{table} ds={day}"
    assert counts[days[1]]["transactions"]["duplicates_dropped"] == 1
    reasons = counts[days[1]]["transactions"]["quarantined_by_reason"]
    assert reasons.keys() >= {"conflicting_duplicate_id", "event_time_before_drop_day"}
    assert counts[days[2]]["labels"]["labels_matched"] > 0
