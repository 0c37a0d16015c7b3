"""The demo's night-by-night replay against a fake Airflow that keeps a backfill's rules: runs created queued,
one active run, a paused backfill starts nothing, and a backfill with no queued or running run is complete
and refuses pause and unpause (HTTP 409 in Airflow)."""

from __future__ import annotations

import datetime as dt

import pytest

from loopline.demo import runs


class _FakeAirflow:
    """A backfill of one DAG, its runs advanced one step each time they are listed (a scheduler loop)."""

    def __init__(self, nights: list[dt.date]) -> None:
        self.runs = {night: "queued" for night in nights}
        self.paused = False
        self.dag_paused = True
        self.completed = False
        self.calls: list[str] = []
        self.between_saw: dict[dt.date, list[str]] = {}

    def _tick(self) -> None:
        running = [night for night, state in self.runs.items() if state == "running"]
        for night in running:
            self.runs[night] = "success"
        queued = sorted(night for night, state in self.runs.items() if state == "queued")
        if not running and queued and not self.paused and not self.dag_paused:
            self.runs[queued[0]] = "running"
        if not any(state in ("queued", "running") for state in self.runs.values()):
            self.completed = True

    # the AirflowApi methods the replay uses
    def open_backfill(self, dag_id: str) -> int | None:
        return None if self.completed else 7

    def pause_backfill(self, backfill_id: int, paused: bool = True) -> None:
        self.calls.append("pause" if paused else "unpause")
        if self.completed:
            raise RuntimeError("Airflow API PUT /api/v2/backfills/7: HTTP 409 Backfill is already completed.")
        self.paused = paused

    def unpause(self, dag_id: str) -> None:
        self.dag_paused = False

    def dag_runs(self, dag_id: str) -> list[dict]:
        self._tick()
        return [{"logical_date": f"{night}T00:00:00+00:00", "state": state} for night, state in self.runs.items()]


@pytest.fixture
def airflow(monkeypatch):
    nights = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(3)]
    fake = _FakeAirflow(nights)
    monkeypatch.setattr(runs, "_api", lambda env: fake)
    monkeypatch.setattr(runs, "create_backfill", lambda *args, **kwargs: None)
    monkeypatch.setattr(runs, "POLL_SECONDS", 0)
    return fake


def test_replay_runs_each_night_alone_and_lets_the_backfill_complete(airflow):
    def between(night: dt.date) -> None:
        airflow.between_saw[night] = [state for _, state in sorted(airflow.runs.items())]

    states = runs.replay_nights("drift_monitor", dt.date(2026, 3, 1), dt.date(2026, 3, 3), {}, print, between)

    assert states == {"success": 3}
    # between(night) runs while every later night is still queued: no night decides before the previous
    # night's follow-up has run
    assert airflow.between_saw == {
        dt.date(2026, 3, 1): ["success", "queued", "queued"],
        dt.date(2026, 3, 2): ["success", "success", "queued"],
        dt.date(2026, 3, 3): ["success", "success", "success"],
    }
    assert airflow.completed
    # never paused after the last night started: the completed backfill would refuse it
    assert airflow.calls == ["pause", "unpause", "pause", "unpause", "pause", "unpause"]


def test_a_night_that_never_starts_times_out_naming_the_run(airflow):
    assert airflow.dag_paused  # a DAG left paused: nothing ever starts
    with pytest.raises(TimeoutError, match=r"drift_monitor's run of 2026-03-01 is still queued after 0 s"):
        runs._night_state("drift_monitor", dt.date(2026, 3, 1), {}, {"queued"}, timeout=0)
