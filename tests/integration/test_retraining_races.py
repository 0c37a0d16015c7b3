"""The races and crash windows of retraining, each forced against real Postgres and a real lake folder.

1. A trigger is recorded ``pending`` and confirmed only once the triggered run exists: a failed trigger stays
   pending, a rerun of the night triggers again, and the cooldown counts only confirmed triggers.
2. Two decides for the same model running at once (a backfill may ignore ``max_active_runs``) cannot both
   trigger: the check-and-record holds a per-model advisory lock.
3. The lake's version sweep keeps versions pinned by an unfinished training run or a registered model's data
   fingerprint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import uuid
from pathlib import Path

import pytest

from loopline import db, monitoring
from loopline.drift import DriftResult, DriftTest

MODEL = "races-model"
NIGHT = dt.date(2026, 3, 10)


def _drifted() -> DriftResult:
    tests = tuple(DriftTest(f"f{i}", "ks", 0.5, 1e-9, 0.01, True) for i in range(3))
    return DriftResult("scipy", tests, ("f0", "f1", "f2"), None, None, 3, 2, True, 100, 200, 0.05, "bonferroni")


@pytest.fixture
def schema(postgres):
    name = f"races_{uuid.uuid4().hex[:8]}"
    conn = postgres.connect()
    try:
        db.migrate(conn, name)
    finally:
        conn.close()
    return name


def _decide(postgres, schema: str, ds: dt.date, **overrides):
    conn = postgres.connect()
    try:
        kwargs = {
            "ds": ds,
            "model_name": MODEL,
            "model_version": 1,
            "result": _drifted(),
            "performance_drop": False,
            "cooldown_hours": 72,
            "training_active": False,
            "train_run_id": f"drift_monitor__{ds}",
            "airflow_run_id": f"scheduled__{ds}",
            **overrides,
        }
        return monitoring.decide_and_record(conn, schema, **kwargs)
    finally:
        conn.close()


def _row(postgres, schema: str, ds: dt.date) -> tuple:
    rows = postgres.query(
        f"SELECT triggered, trigger_state, train_run_id, triggered_run_id, confirmed_at IS NOT NULL "
        f"FROM {schema}.retraining_decisions WHERE ds = %s",
        ds,
    )
    return rows[0] if rows else None


def _confirm(postgres, schema: str, ds: dt.date) -> bool:
    conn = postgres.connect()
    try:
        return monitoring.confirm_trigger(conn, schema, ds=ds, triggered_run_id=f"drift_monitor__{ds}")
    finally:
        conn.close()


# -- 1. two-phase trigger -------------------------------------------------------------------------------------


def test_a_failed_trigger_stays_pending_and_a_rerun_of_the_night_triggers_again(postgres, schema):
    decision, already = _decide(postgres, schema, NIGHT)
    assert decision.trigger
    assert not already
    # The trigger task failed here: nothing confirmed it.
    assert _row(postgres, schema, NIGHT) == (False, "pending", f"drift_monitor__{NIGHT}", None, False)

    # The rerun (or the retry) of the night is not suppressed by its own pending row.
    decision, already = _decide(postgres, schema, NIGHT, airflow_run_id="manual__rerun")
    assert decision.trigger, decision.reason
    assert not already
    assert _row(postgres, schema, NIGHT)[:2] == (False, "pending")

    # This time the run exists: confirmed.
    assert _confirm(postgres, schema, NIGHT) is True
    run = f"drift_monitor__{NIGHT}"
    assert _row(postgres, schema, NIGHT) == (True, "confirmed", run, run, True)
    assert _confirm(postgres, schema, NIGHT) is True  # idempotent

    # A further rerun of the night never triggers twice.
    decision, already = _decide(postgres, schema, NIGHT)
    assert not decision.trigger
    assert already
    assert decision.reason.startswith("already triggered for this night")
    assert _row(postgres, schema, NIGHT)[:2] == (True, "confirmed")


def test_a_rerun_whose_earlier_trigger_did_create_the_run_confirms_instead_of_triggering(postgres, schema):
    _decide(postgres, schema, NIGHT)  # pending; the trigger worked but the confirmation never ran
    decision, already = _decide(postgres, schema, NIGHT, training_active=True, triggered_run_exists=True)
    assert not decision.trigger
    assert already
    run = f"drift_monitor__{NIGHT}"
    assert _row(postgres, schema, NIGHT)[:4] == (True, "confirmed", run, run)


def test_the_cooldown_counts_only_confirmed_triggers(postgres, schema):
    earlier = NIGHT - dt.timedelta(days=1)
    _decide(postgres, schema, earlier)  # pending: its trigger failed and nobody reran it
    # Age the failed trigger past the lease: it is no longer a trigger in flight.
    conn = postgres.connect()
    with conn, conn.cursor() as cur:
        cur.execute(
            f"UPDATE {schema}.retraining_decisions SET decided_at = now() - interval '2 hours' WHERE ds = %s",
            (earlier,),
        )
    conn.close()
    decision, _ = _decide(postgres, schema, NIGHT)
    assert decision.trigger, decision.reason  # a failed trigger a night before is no cooldown

    _confirm(postgres, schema, NIGHT)
    decision, _ = _decide(postgres, schema, NIGHT + dt.timedelta(days=1))
    assert not decision.trigger
    assert "cooldown" in decision.reason
    assert _row(postgres, schema, NIGHT + dt.timedelta(days=1))[:3] == (False, None, None)


def test_a_night_of_both_kinds_retrains_now_and_again_when_its_labels_matured(postgres, schema):
    """The immediate (covariate) retraining's cooldown does not hold the one at label maturity: it ran before
    the pattern's labels existed. The retraining that fired the scheduled one does start a cooldown for them."""
    from dataclasses import replace

    both = replace(_drifted(), drifted_segments=("card_testing",))
    decision, _ = _decide(postgres, schema, NIGHT, result=both, label_maturity_days=5)
    assert decision.trigger, decision.reason
    assert (decision.kind, decision.schedule) == ("both", True)
    _confirm(postgres, schema, NIGHT)
    later = NIGHT + dt.timedelta(days=1)  # the pattern again: scheduled, held by nothing yet
    _decide(postgres, schema, later, result=replace(both, drifted_features=()), label_maturity_days=5)

    due_night = NIGHT + dt.timedelta(days=5)  # inside the 10-day cooldown of NIGHT's trigger
    quiet = replace(_drifted(), drifted_features=(), drift=False, signals=0)
    decision, _ = _decide(postgres, schema, due_night, result=quiet, cooldown_hours=240, label_maturity_days=5)
    assert decision.trigger, decision.reason
    assert decision.due == [NIGHT.isoformat()]
    assert "does not hold it" in decision.reason
    _confirm(postgres, schema, due_night)
    states = postgres.query(f"SELECT drift_ds, state, settled_by FROM {schema}.scheduled_retrainings ORDER BY drift_ds")
    assert states == [
        (NIGHT, "fired", f"drift_monitor__{due_night}"),
        (later, "pending", None),
    ]
    # A rerun of an old night schedules a row due before the last retraining: that retraining covered it.
    old = NIGHT - dt.timedelta(days=3)
    _decide(postgres, schema, old, result=replace(both, drifted_features=()), label_maturity_days=5)
    # The next night's due retraining waits for the cooldown of the one that just fired.
    decision, _ = _decide(
        postgres, schema, due_night + dt.timedelta(days=1), result=quiet, cooldown_hours=240, label_maturity_days=5
    )
    assert not decision.trigger
    assert "cooldown" in decision.reason
    assert "scheduled retraining due" in decision.reason
    assert decision.reason.count("last trigger at") == 1  # one trigger: both cooldowns are the same
    states = postgres.query(f"SELECT drift_ds, state, settled_by FROM {schema}.scheduled_retrainings ORDER BY drift_ds")
    assert states == [
        (old, "fired", f"drift_monitor__{due_night}"),
        (NIGHT, "fired", f"drift_monitor__{due_night}"),
        (later, "pending", None),
    ]


def test_a_fresh_pending_trigger_of_another_night_suppresses_a_second_one(postgres, schema):
    _decide(postgres, schema, NIGHT)  # pending, the trigger in flight
    other = NIGHT + dt.timedelta(days=5)  # outside the cooldown even if NIGHT were confirmed
    decision, _ = _decide(postgres, schema, other, cooldown_hours=0)
    assert not decision.trigger
    assert f"the trigger of night {NIGHT} is pending" in decision.reason
    assert _row(postgres, schema, other)[:2] == (False, None)


def test_the_migration_keeps_old_triggers_as_confirmed(postgres):
    name = f"races_old_{uuid.uuid4().hex[:8]}"
    conn = postgres.connect()
    try:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            older = Path(tmp)
            for path in db.migration_files():
                if path.name < "V008":
                    (older / path.name).write_text(path.read_text())
            db.migrate(conn, name, older)
        with conn.cursor() as cur:
            cur.execute(
                f"""INSERT INTO {name}.retraining_decisions
                (ds, model_name, triggered, reason, drifted_features, train_run_id)
                VALUES ('2026-01-01', %s, true, 'drift', '{{}}', 'drift_monitor__2026-01-01'),
                       ('2026-01-02', %s, false, 'cooldown', '{{}}', NULL)""",
                (MODEL, MODEL),
            )
        conn.commit()
        assert "V008" in db.migrate(conn, name)
    finally:
        conn.close()
    rows = postgres.query(
        f"SELECT ds::text, triggered, trigger_state, triggered_run_id FROM {name}.retraining_decisions ORDER BY ds"
    )
    assert rows == [
        ("2026-01-01", True, "confirmed", "drift_monitor__2026-01-01"),
        ("2026-01-02", False, None, None),
    ]


# -- 2. concurrent decides ------------------------------------------------------------------------------------


def test_two_concurrent_decides_for_one_model_trigger_exactly_once(postgres, schema, monkeypatch):
    """Two nights of one model decided at the same moment (a backfill running nights in parallel), each on its
    own connection, both with drift and no cooldown in the way of either. Both reach the decision at the same
    time unless the lock serializes them (a barrier waits for the other for up to 2 s)."""
    barrier = threading.Barrier(2)
    real = monitoring.decision.retrain_decision

    def rendezvous(*args, **kwargs):
        # Without the lock, both check before either records; with it, the other waits on the lock: go on alone.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(monitoring.decision, "retrain_decision", rendezvous)
    nights = [NIGHT, NIGHT + dt.timedelta(days=7)]  # 7 nights apart: outside each other's 72 h cooldown
    results: dict[dt.date, object] = {}
    errors: list[BaseException] = []

    def run(day: dt.date) -> None:
        try:
            results[day] = _decide(postgres, schema, day)[0]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(day,)) for day in nights]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    triggered = [day for day, decision in results.items() if decision.trigger]
    assert len(triggered) == 1, {day: decision.reason for day, decision in results.items()}
    states = postgres.query(
        f"SELECT ds, trigger_state FROM {schema}.retraining_decisions WHERE model_name = %s ORDER BY ds", MODEL
    )
    assert [state for _, state in states].count("pending") == 1
    loser = next(day for day in nights if day not in triggered)
    assert "pending" in results[loser].reason


def test_the_lock_is_per_model(postgres, schema, monkeypatch):
    """Another model's night decides while one model's lock is held."""
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=5s")  # a global lock fails this test instead of hanging it
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            monitoring.decision._lock_model(cur, MODEL)  # held until this transaction ends
            decision, _ = _decide(postgres, schema, NIGHT, model_name="another-model")
            assert decision.trigger
    finally:
        conn.rollback()
        conn.close()


# -- 3. the lake's sweep vs pins ------------------------------------------------------------------------------

DAY = dt.date(2026, 1, 20)


def _version(lake, table: str, version: str, day: dt.date = DAY) -> None:
    folder = Path(lake.version_uri(table, day, version))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-00000.parquet").write_bytes(b"data")
    (folder / "_SUCCESS").write_bytes(b"")


def _on_disk(lake, table: str, day: dt.date = DAY) -> set[str]:
    return {path.name.removeprefix("run=") for path in Path(lake.partition_root(table, day)).glob("run=*")}


def test_a_running_training_pins_what_it_reads_and_the_sweep_keeps_it_until_release(tmp_path):
    from loopline.lake import FEATURES, Lake

    lake = Lake(str(tmp_path / "lake"))
    _version(lake, FEATURES, "v1")
    lake.commit(FEATURES, DAY, "v1")
    run_pin = "train_model__manual__2026-01-21T00:00:00+00:00"  # a real run id: ':' and '+' in it
    assert lake.pin_current(run_pin, FEATURES, [DAY, DAY + dt.timedelta(days=1)]) == {DAY: "v1"}

    # Two commits while the run still reads v1: without the pin the second one would delete it.
    for version in ("v2", "v3"):
        _version(lake, FEATURES, version)
        report = lake.commit(FEATURES, DAY, version)
    assert _on_disk(lake, FEATURES) == {"v1", "v2", "v3"}
    assert report.deleted == []
    assert report.kept["v1"] == f"pinned by run {run_pin}"
    assert report.kept["v3"] == "current"
    assert report.kept["v2"].startswith("previous")
    assert "kept 3 version(s)" in report.summary()
    assert "1 of them pinned" in report.summary()

    # The run ends (release_inputs): the next sweep deletes it.
    assert lake.release(run_pin) is True
    assert lake.release(run_pin) is False  # idempotent
    report = lake.sweep(FEATURES, DAY)
    assert report.deleted == ["v1"]
    assert _on_disk(lake, FEATURES) == {"v2", "v3"}


def test_a_registered_models_fingerprint_versions_survive_the_sweep(tmp_path):
    from loopline.lake import FEATURES, LABELED_TRANSACTIONS, Lake, model_pin_id, run_pin_id
    from loopline.training.dataset import build_training_set, fingerprint_versions
    from loopline.training.synthetic import write_synthetic_lake

    root = tmp_path / "lake"
    write_synthetic_lake(root, dt.date(2026, 1, 1), 30, rows_per_day=250, seed=3)
    lake = Lake(str(root))
    run_pin = run_pin_id("train_model", "manual__2026-01-31")
    data = build_training_set(
        str(root),
        dt.date(2026, 1, 31),
        window_days=28,
        validation_days=3,
        holdout_days=3,
        label_maturity_days=5,
        pin_id=run_pin,
    )
    pinned = lake.read_pin(run_pin)
    assert pinned is not None
    read = fingerprint_versions(data.fingerprint)
    assert read[FEATURES]  # the run pinned exactly what its fingerprint says it read
    assert pinned.versions[FEATURES] == read[FEATURES]
    assert pinned.versions[LABELED_TRANSACTIONS] == read[LABELED_TRANSACTIONS]

    # The gate registered v7 of the model: its fingerprint is pinned for as long as v7 lives; the run ends.
    lake.pin(model_pin_id("races-model", 7), read, kind="model")
    assert lake.release(run_pin) is True
    day = dt.date.fromisoformat(next(iter(read[FEATURES])))
    trained_on = read[FEATURES][day.isoformat()]
    for version in ("x1", "x2"):  # two recomputations of the day later (named after the first, as in time)
        _version(lake, FEATURES, version, day)
        report = lake.commit(FEATURES, day, version)
    assert trained_on in _on_disk(lake, FEATURES, day)
    assert report.kept[trained_on] == "pinned by model model:races-model:v7"

    # Deleted from the registry: its pin goes, and so does the version at the next sweep.
    assert lake.release_model_pins("races-model", live_versions=[8]) == ["model:races-model:v7"]
    assert lake.sweep(FEATURES, day).deleted == [trained_on]


def test_pins_and_the_sweep_on_an_object_store(s3, monkeypatch, tmp_path):
    from loopline.lake import FEATURES, PINS, Lake

    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)  # only the loopline_s3 connection knows where the server is
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    bucket = f"loopline-{uuid.uuid4().hex[:12]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    lake = Lake(f"s3://{bucket}/lake")

    def put(version: str) -> None:
        for name in ("part-00000.parquet", "part-00001.parquet", "_SUCCESS"):
            key = f"lake/{FEATURES}/ds={DAY}/run={version}/{name}"
            client.put_object(Bucket=bucket, Key=key, Body=b"x")

    def versions() -> set[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lake/{FEATURES}/ds={DAY}/run=")
        return {item["Key"].split("/run=")[1].split("/")[0] for item in listed.get("Contents", [])}

    put("v1")
    lake.commit(FEATURES, DAY, "v1")
    assert lake.pin_current("train_model__run-1", FEATURES, [DAY]) == {DAY: "v1"}
    keys = client.list_objects_v2(Bucket=bucket, Prefix=f"lake/{PINS}/")["Contents"]
    assert len(keys) == 1
    for version in ("v2", "v3", "v4"):
        put(version)
        report = lake.commit(FEATURES, DAY, version)
    assert versions() == {"v1", "v3", "v4"}  # v2 swept, v1 pinned
    assert report.deleted == ["v2"]
    assert report.kept["v1"] == "pinned by run train_model__run-1"
    assert lake.release("train_model__run-1") is True
    assert lake.sweep(FEATURES, DAY).deleted == ["v1"]
    assert versions() == {"v3", "v4"}


def test_an_unreadable_pin_marker_keeps_everything_and_a_pin_id_cannot_leave_the_pins_folder(tmp_path):
    from loopline.lake import FEATURES, PINS, Lake, pin_file_name

    lake = Lake(str(tmp_path / "lake"))
    hostile = "../../features/ds=2026-01-20/_CURRENT"
    assert "/" not in pin_file_name(hostile)
    uri = lake.pin(hostile, {FEATURES: {DAY.isoformat(): "v1"}})
    assert Path(uri).parent == tmp_path / "lake" / PINS
    assert lake.read_pin(hostile).pin_id == hostile

    for version in ("v1", "v2", "v3"):
        _version(lake, FEATURES, version)
        lake.commit(FEATURES, DAY, version)
    (tmp_path / "lake" / PINS / "broken.json").write_text("{not json")
    _version(lake, FEATURES, "v4")
    report = lake.commit(FEATURES, DAY, "v4")  # publishing goes on; the sweep keeps everything
    assert report.deleted == []
    assert _on_disk(lake, FEATURES) == {"v1", "v2", "v3", "v4"}
    assert "unswept" in report.kept["v2"]


def test_a_version_pinned_while_commits_race_is_never_swept(tmp_path, monkeypatch):
    """A writer commits new versions of the day as fast as it can while readers pin what they resolve: every
    version a reader pinned is still on disk afterwards (pin, then re-check the pointer). The gap between
    resolving and writing the pin is widened to 2 ms: resolve-then-pin alone loses versions here."""
    import time

    from loopline.lake import FEATURES, Lake

    real_pin = Lake.pin

    def slow_pin(self, *args, **kwargs):
        time.sleep(0.002)
        return real_pin(self, *args, **kwargs)

    monkeypatch.setattr(Lake, "pin", slow_pin)
    lake = Lake(str(tmp_path / "lake"))
    _version(lake, FEATURES, "w000")
    lake.commit(FEATURES, DAY, "w000")
    stop = threading.Event()

    def writer() -> None:
        index = 1
        while not stop.is_set():
            version = f"w{index:03d}"
            _version(lake, FEATURES, version)
            lake.commit(FEATURES, DAY, version)
            index += 1
            time.sleep(0.001)  # racing, but leaving a reader a chance to finish within its attempts

    thread = threading.Thread(target=writer)
    thread.start()
    pinned = {}
    try:
        for attempt in range(40):
            pin_id = f"train_model__reader-{attempt}"
            pinned[pin_id] = lake.pin_current(pin_id, FEATURES, [DAY], attempts=50)[DAY]
    finally:
        stop.set()
        thread.join(timeout=30)
    on_disk = _on_disk(lake, FEATURES)
    assert set(pinned.values()) <= on_disk
    record = lake._read_record(FEATURES, DAY)
    assert int(record["version"][1:]) >= 5  # the writer really raced the readers
    # A reader that re-pinned after the writer's last sweep leaves its first version for the next commit's
    # sweep; after one more commit what remains is exactly the pinned, current and previous.
    _version(lake, FEATURES, "w999")
    lake.commit(FEATURES, DAY, "w999")
    assert _on_disk(lake, FEATURES) == set(pinned.values()) | {"w999", record["version"]}


# -- the trigger form's dry run ---------------------------------------------------------------------------------


def test_a_dry_run_records_the_decision_but_no_trigger_and_no_cooldown(postgres, schema):
    decision, already = _decide(postgres, schema, NIGHT, dry_run=True)
    assert not decision.trigger
    assert not already
    assert decision.reason.startswith("dry run: would trigger: ")
    assert _row(postgres, schema, NIGHT) == (False, None, None, None, False)  # recorded, nothing pending
    (reason,) = postgres.query(f"SELECT reason FROM {schema}.retraining_decisions WHERE ds = %s", NIGHT)[0]
    assert reason == decision.reason

    # It started no cooldown: the next night, not a dry run, triggers.
    decision, _ = _decide(postgres, schema, NIGHT + dt.timedelta(days=1))
    assert decision.trigger, decision.reason
