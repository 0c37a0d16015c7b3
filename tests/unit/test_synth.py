"""Tests for the synthetic landing-zone generator (loopline.synth)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from loopline import synth
from loopline.synth import DRIFT_KINDS, GenerateSummary, generate

START = dt.date(2026, 1, 5)
TX_HEADER = (
    "transaction_id,event_time,customer_id,merchant_id,merchant_category,amount,currency,channel,country,card_present"
)
LABEL_HEADER = "transaction_id,is_fraud,reported_at"
TRUTH_HEADER = "transaction_id,fraud_probability,is_fraud,drifted"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"
TX_ROW = re.compile(
    rf"^(?P<id>{UUID}),(?P<time>{TIME}),cus-\d{{7}},mer-\d{{6}},(?P<cat>[a-z_]+),"
    r"(?P<amount>\d+\.\d{2}),(?P<cur>[A-Z]{3}),(?P<channel>pos|online|atm),(?P<country>[A-Z]{2}),"
    r"(?P<cp>true|false)$"
)
LABEL_ROW = re.compile(rf"^{UUID},[01],{TIME}$")
TRUTH_ROW = re.compile(rf"^{UUID},[01]\.\d{{6}},[01],[01]$")


def _part(folder: Path) -> Path:
    parts = sorted(folder.glob("part-*"))
    assert len(parts) == 1, parts
    return parts[0]


def _lines(folder: Path) -> list[str]:
    path = _part(folder)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("ascii").splitlines()


def _frame(root: Path, dataset: str) -> pd.DataFrame:
    """All days of one dataset (transactions, labels or truth) with the ds folder's date in ``ds``."""
    frames = []
    for folder in sorted(root.glob(f"{dataset}/ds=*") if dataset != "truth" else root.glob("ds=*")):
        path = _part(folder)
        frame = pd.read_csv(path, dtype={"transaction_id": str, "card_present": str})
        frames.append(frame.assign(ds=pd.Timestamp(folder.name.removeprefix("ds="))))
    return pd.concat(frames, ignore_index=True)


def _tree_hashes(*roots: Path) -> dict[str, str]:
    hashes = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                hashes[f"{root.name}/{path.relative_to(root)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, pd.DataFrame]:
    """36 days (longer than the 30-day label delay) of a small population, joined with its truth."""
    base = tmp_path_factory.mktemp("month")
    summary = generate(START, 36, base / "landing", transactions_per_day=400, seed=11)
    tx = _frame(summary.landing, "transactions")
    truth = _frame(summary.truth, "truth").drop(columns="ds")
    return summary, tx.merge(truth, on="transaction_id", how="left", validate="one_to_one")


def test_transaction_files_follow_the_landing_contract(tmp_path: Path) -> None:
    summary = generate(START, 3, tmp_path / "landing", transactions_per_day=300)

    assert summary == GenerateSummary(
        days=3,
        transactions=900,
        frauds=summary.frauds,
        labels=summary.labels,
        landing=tmp_path / "landing",
        truth=tmp_path / "truth",
    )
    seen: set[str] = set()
    for offset in range(3):
        day = START + dt.timedelta(days=offset)
        folder = tmp_path / "landing" / "transactions" / f"ds={day.isoformat()}"
        assert (folder / "_SUCCESS").read_bytes() == b""
        assert (tmp_path / "landing" / "labels" / f"ds={day.isoformat()}" / "_SUCCESS").is_file()
        assert _part(folder).name == "part-00000.csv"
        header, *rows = _lines(folder)
        assert header == TX_HEADER
        assert len(rows) == 300
        times = []
        for row in rows:
            match = TX_ROW.match(row)
            assert match, row
            assert match["time"].startswith(day.isoformat() + "T")
            assert match["cat"] in synth.CATEGORIES
            assert match["cur"] in {"EUR", "USD", "GBP"}
            assert match["country"] in synth.COUNTRIES
            assert float(match["amount"]) > 0
            if match["channel"] == "online":
                assert match["cp"] == "false"
            if match["channel"] == "atm":
                assert match["cp"] == "true"
            times.append(match["time"])
            seen.add(match["id"])
        assert times == sorted(times)
    assert len(seen) == 900, "transaction ids must be unique across days"


def test_labels_and_truth_files_have_exact_headers(tmp_path: Path) -> None:
    generate(START, 4, tmp_path / "landing", transactions_per_day=200)
    first = tmp_path / "landing" / "labels" / f"ds={START.isoformat()}"
    assert _lines(first) == [LABEL_HEADER], "the first day has nothing to report yet: header only"
    for folder in sorted((tmp_path / "landing" / "labels").iterdir())[1:]:
        header, *rows = _lines(folder)
        assert header == LABEL_HEADER
        assert rows
        assert all(LABEL_ROW.match(row) for row in rows)
    for folder in sorted((tmp_path / "truth").iterdir()):
        header, *rows = _lines(folder)
        assert header == TRUTH_HEADER
        assert all(TRUTH_ROW.match(row) for row in rows)
        assert not (folder / "_SUCCESS").exists()


@pytest.mark.parametrize("compress", [False, True])
def test_output_is_byte_for_byte_deterministic(tmp_path: Path, compress: bool) -> None:
    def run(name: str, seed: int) -> dict[str, str]:
        summary = generate(
            START,
            3,
            tmp_path / name / "landing",
            transactions_per_day=250,
            seed=seed,
            drift_start=START + dt.timedelta(days=1),
            drift_kind="new_pattern",
            compress=compress,
        )
        return _tree_hashes(summary.landing, summary.truth)

    first, again, other = run("a", 3), run("b", 3), run("c", 4)
    assert first == again
    assert len(first) == 3 * (2 + 2 + 1)  # per day: transactions+marker, labels+marker, truth
    assert set(other) == set(first)
    changed = [name for name in first if first[name] != other[name] and not name.endswith("_SUCCESS")]
    assert len(changed) == len(first) - 6 - 1, "a different seed must change every data file but day 1's labels"
    if compress:
        assert all(name.endswith(("_SUCCESS", ".csv.gz")) for name in first)


def test_rerun_over_the_same_folder_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "landing"
    generate(START, 2, out, transactions_per_day=150, compress=True)
    generate(START, 2, out, transactions_per_day=150)
    before = _tree_hashes(out, tmp_path / "truth")
    generate(START, 2, out, transactions_per_day=150)
    assert _tree_hashes(out, tmp_path / "truth") == before
    # Switching format leaves exactly one part file per folder, and no temp files.
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".gz") or p.name.startswith(".")]


def test_labels_are_consistent_with_transactions_and_truth(
    month: tuple[GenerateSummary, pd.DataFrame],
) -> None:
    summary, tx = month
    labels = _frame(summary.landing, "labels")
    assert len(labels) == summary.labels
    assert labels.transaction_id.is_unique
    joined = labels.merge(tx, on="transaction_id", how="left", suffixes=("_label", ""), validate="one_to_one")
    assert joined.event_time.notna().all(), "every label refers to a transaction of the window"

    event = pd.to_datetime(joined.event_time)
    reported = pd.to_datetime(joined.reported_at)
    assert (reported.dt.normalize().dt.tz_localize(None) == joined.ds_label).all()
    delay = reported - event
    assert delay.min() >= pd.Timedelta(days=1)
    assert delay.max() <= pd.Timedelta(days=30)
    assert (joined.is_fraud_label == joined.is_fraud).all(), "labels must agree with the truth"
    frauds = delay[joined.is_fraud == 1]
    assert frauds.max() <= pd.Timedelta(days=20), "fraud is reported within 20 days"

    last = tx.ds.max()
    labelled = tx.transaction_id.isin(labels.transaction_id)
    # A transaction 30+ days before the window's end has surely been reported; the last day's not yet.
    assert labelled[tx.ds <= last - pd.Timedelta(days=30)].all()
    assert not labelled[tx.ds == last].any()
    assert summary.frauds == int(tx.is_fraud.sum())


def test_label_count_is_the_transactions_reported_inside_the_window(
    tmp_path: Path, month: tuple[GenerateSummary, pd.DataFrame]
) -> None:
    summary, tx = month
    # Days do not depend on the window, so a window 30 days longer holds every label of the first one.
    longer = generate(START, 36 + 30, tmp_path / "landing", transactions_per_day=400, seed=11)
    all_labels = _frame(longer.landing, "labels")
    assert set(all_labels.transaction_id) >= set(tx.transaction_id)
    inside = all_labels[all_labels.transaction_id.isin(tx.transaction_id) & (all_labels.ds <= tx.ds.max())]
    assert summary.labels == len(inside)
    for offset in range(36):
        name = f"ds={(START + dt.timedelta(days=offset)).isoformat()}"
        for dataset in ("transactions", "labels"):
            short, long = summary.landing / dataset / name, longer.landing / dataset / name
            assert _part(short).read_bytes() == _part(long).read_bytes()


def test_truth_probabilities_carry_learnable_signal(month: tuple[GenerateSummary, pd.DataFrame]) -> None:
    _, tx = month
    assert 0.003 <= tx.is_fraud.mean() <= 0.03
    assert (tx.drifted == 0).all()
    assert tx.fraud_probability.between(0, 1).all()
    # is_fraud ~ Bernoulli(p): the realised rate matches the mean probability.
    assert abs(tx.is_fraud.mean() - tx.fraud_probability.mean()) < 0.004

    p = tx.fraud_probability
    hour = pd.to_datetime(tx.event_time).dt.hour
    night = hour < 6
    home = tx.groupby("customer_id").country.agg(lambda s: s.value_counts().index[0])
    foreign = tx.country != tx.customer_id.map(home)
    # A merchant first seen for this customer after the first week counts as new.
    first_seen = tx.groupby(["customer_id", "merchant_id"]).ds.transform("min")
    new_merchant = (first_seen == tx.ds) & (tx.ds >= tx.ds.min() + pd.Timedelta(days=7))
    online = tx.card_present == "false"
    for signal in (night, foreign, new_merchant, online):
        assert p[signal].mean() > 3 * p[~signal].mean()
    assert tx.groupby("is_fraud").amount.median()[1] > tx.groupby("is_fraud").amount.median()[0]


@pytest.fixture(scope="module")
def drift_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str | None, pd.DataFrame]:
    """Eight days of 1500 rows, drifting from day five, for every kind and for no drift."""
    base = tmp_path_factory.mktemp("drift")
    runs: dict[str | None, pd.DataFrame] = {}
    for kind in (None, *DRIFT_KINDS):
        summary = generate(
            START,
            8,
            base / str(kind) / "landing",
            transactions_per_day=1500,
            drift_start=None if kind is None else START + dt.timedelta(days=4),
            drift_kind=kind,
        )
        tx = _frame(summary.landing, "transactions")
        truth = _frame(summary.truth, "truth").drop(columns="ds")
        frame = tx.merge(truth, on="transaction_id", validate="one_to_one")
        runs[kind] = frame.assign(after=frame.ds >= pd.Timestamp(START + dt.timedelta(days=4)))
    return runs


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_drift_flags_and_days_before_the_drift_are_unchanged(
    drift_runs: dict[str | None, pd.DataFrame], kind: str
) -> None:
    drifted, plain = drift_runs[kind], drift_runs[None]
    assert (drifted.drifted == drifted.after.astype(int)).all()
    assert (plain.drifted == 0).all()
    before = drifted[~drifted.after].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, plain[~plain.after].reset_index(drop=True))
    # Drifted days are different transactions, so they never reuse the undrifted run's ids.
    assert not drifted[drifted.after].transaction_id.isin(plain.transaction_id).any()


def test_covariate_drift_shifts_inputs(drift_runs: dict[str | None, pd.DataFrame]) -> None:
    frame = drift_runs["covariate"]
    before, after = frame[~frame.after], frame[frame.after]
    assert after.amount.mean() > 1.5 * before.amount.mean()
    assert (after.channel == "online").mean() > 1.5 * (before.channel == "online").mean()
    shopping = ["electronics", "digital_goods"]
    assert after.merchant_category.isin(shopping).mean() > 2 * before.merchant_category.isin(shopping).mean()


def test_new_pattern_drift_adds_small_digital_goods_fraud(drift_runs: dict[str | None, pd.DataFrame]) -> None:
    frame = drift_runs["new_pattern"]
    pattern = (frame.merchant_category == "digital_goods") & (frame.amount <= 5) & (frame.is_fraud == 1)
    assert pattern[~frame.after].sum() <= 1
    assert pattern[frame.after].sum() >= 20
    # The ring uses merchants nobody paid at before, in the customer's own country, in the daytime.
    new_merchants = set(frame[frame.after].merchant_id) - set(frame[~frame.after].merchant_id)
    ring = frame[frame.merchant_id.isin(new_merchants) & pattern]
    assert len(ring) >= 20
    assert pd.to_datetime(ring.event_time).dt.hour.between(8, 19).all()
    assert (ring.currency == "EUR").all()
    # Amounts hardly move; the category mix does, a little.
    before, after = frame[~frame.after], frame[frame.after]
    assert after.amount.mean() == pytest.approx(before.amount.mean(), rel=0.15)
    assert (after.merchant_category == "digital_goods").mean() > (before.merchant_category == "digital_goods").mean()


def test_fraud_surge_multiplies_the_fraud_rate(drift_runs: dict[str | None, pd.DataFrame]) -> None:
    frame = drift_runs["fraud_surge"]
    assert frame[frame.after].is_fraud.mean() > 2.5 * frame[~frame.after].is_fraud.mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 0}, r"days must be an integer >= 1"),
        ({"transactions_per_day": 0}, r"transactions_per_day must be an integer >= 1"),
        ({"transactions_per_day": 2.5}, r"transactions_per_day must be an integer"),
        ({"seed": -1}, r"seed must be an integer >= 0"),
        ({"customers": 0}, r"customers must be an integer >= 1"),
        ({"start": dt.datetime(2026, 1, 5, 12, 0)}, r"start must be a datetime.date"),
        (
            {"drift_start": START, "drift_kind": "gradual"},
            r"unknown drift_kind 'gradual'; valid kinds: covariate, new_pattern, fraud_surge",
        ),
        ({"drift_start": START}, r"drift_start and drift_kind go together"),
        ({"drift_kind": "covariate"}, r"drift_start and drift_kind go together"),
        ({"truth_out": "INSIDE"}, r"truth_out .* must lie outside the landing zone"),
    ],
)
def test_bad_arguments_raise_helpful_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"start": START, "days": 1, "out": tmp_path / "landing"}
    arguments.update(kwargs)
    if arguments.get("truth_out") == "INSIDE":
        arguments["truth_out"] = tmp_path / "landing" / "truth"
    with pytest.raises(ValueError, match=message):
        generate(**arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "landing").exists(), "nothing is written when the arguments are wrong"


def test_a_200k_row_day_fits_in_bounded_memory(tmp_path: Path) -> None:
    pytest.importorskip("resource")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child of a big pytest process
    # would report its parent's size; VmHWM belongs to the child's own address space.
    script = (
        "import datetime, json, re, sys; from pathlib import Path; "
        "from loopline.synth import generate; "
        "s = generate(datetime.date(2026, 1, 5), 1, Path(sys.argv[1]), transactions_per_day=200_000); "
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)); "
        "print(json.dumps([s.transactions, hwm]))"
    )
    # The child must import the same loopline as this process, installed or not.
    package_root = str(Path(synth.__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "landing")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    rows, max_rss_kib = json.loads(done.stdout.strip().splitlines()[-1])
    assert rows == 200_000
    assert max_rss_kib < 512 * 1024, f"peak RSS {max_rss_kib / 1024:.0f} MiB"
    assert len(_lines(tmp_path / "landing" / "transactions" / "ds=2026-01-05")) == 200_001


def test_the_generate_command_writes_the_days_it_is_asked_for(tmp_path, capsys):
    from loopline.cli import main

    landing = str(tmp_path / "landing")
    args = ["generate", "--start", "2026-01-01", "--days", "2", "--out", landing, "--transactions-per-day", "50"]
    assert main([*args, "--drift-start", "2026-01-02", "--drift-kind", "covariate"]) == 0
    assert "generated 2 days, 100 transactions" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "landing" / "transactions").iterdir()) == [
        "ds=2026-01-01",
        "ds=2026-01-02",
    ]
