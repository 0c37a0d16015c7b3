"""What the demo runs: its plan (:class:`DemoPlan`: the days, the drift, the source, the stack's settings) and
its sources (``--source postgres`` writes the generated days into tables the runs extract from).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loopline import lake as tables
from loopline import stack
from loopline.config import LooplineConfig


def default_start(days: int = 60) -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)


@dataclass(frozen=True)
class DemoPlan:
    """60 days of history ending yesterday (UTC), drifted over its last nights.

    The loop is replayed as it would have run: the first champion is trained with what was known on the
    first monitored day, that day and the following ones are scored, and ``drift_monitor`` replays those
    nights (``stable_nights`` before the drift, ``drifted_nights`` in it) and decides on retraining.

    The first champion is a team's first model: a short window (``first_champion_window_days``: with 20
    days of label maturity, 35 days hold 4 training days). The retraining the drift triggers uses the
    configured window (50 days: 19 training days). Labels of the drifted days mature only 20 days later, so
    a retrained model cannot learn the drift itself; what it brings is the history the first model lacked.
    Trained on the same window as the first champion, the challenger only ties it and the gate's margin
    decides by chance; against the short window it was promoted on every date tried
    (``benchmarks/replay_gate.py``; its figures are on the Benchmarks page).
    """

    start: dt.date = field(default_factory=default_start)
    days: int = 60
    transactions_per_day: int = 5000
    drift_kind: str = "covariate"
    stable_nights: int = 3
    drifted_nights: int = 3
    seed: int = 7
    first_champion_window_days: int = 35
    # The promotion path (``loopline demo --promotion``): shortest settings of promotion on evidence. Labels
    # count as matured after ``maturity_days`` (instead of features.label_maturity_days), the pattern drift's
    # retraining fires on the night its labels matured, the retrained model is deployed as shadow, judged on
    # ``evidence_days`` matured days, and the promotion request is approved through the REST API.
    promotion: bool = False
    maturity_days: int = 5
    evidence_days: int = 2
    # Where the inputs come from (``loopline demo --source``): ``landing`` (the generator's drop files) or
    # ``postgres`` (the generator writes tables in the stack's database; see source_environment).
    source: str = "landing"
    # The promotion path's first champion keeps the same handicap: with labels matured after 5 days instead
    # of 20, 35 days would hold 19 training days; 20 days hold 4, as 35 do with 20 days of maturity.
    promotion_first_window_days: int = 20

    @property
    def first_window_days(self) -> int:
        """The first champion's training window (days before its cut-off)."""
        return self.promotion_first_window_days if self.promotion else self.first_champion_window_days

    @property
    def end(self) -> dt.date:
        """The last generated day: yesterday, run by the scheduler itself."""
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def drift_start(self) -> dt.date:
        if self.promotion:
            # drift night -> maturity -> retraining night -> the shadow scores the next days -> maturity ->
            # evidence_days nights of evidence, the last one yesterday
            return self.end - dt.timedelta(days=2 * self.maturity_days + self.evidence_days)
        return self.end - dt.timedelta(days=self.drifted_nights - 1)

    @property
    def retrain_night(self) -> dt.date:
        """Promotion path: the night the drift night's labels have matured and its retraining fires."""
        return self.drift_start + dt.timedelta(days=self.maturity_days)

    def evidence_nights(self, deployed: dt.date | None = None) -> list[dt.date]:
        """Promotion path: the nights whose matured day a shadow deployed on ``deployed`` (its cut-off, by default
        the morning after ``retrain_night``) scored: compare_shadow has evidence on them. Empty when none."""
        deployed = deployed or self.retrain_night + dt.timedelta(days=1)
        return tables.day_range(deployed + dt.timedelta(days=self.maturity_days), self.end)

    @property
    def first_monitored(self) -> dt.date:
        """The first scored and monitored day, and the first champion's training cut-off."""
        return self.drift_start - dt.timedelta(days=self.stable_nights)

    def __post_init__(self) -> None:
        if self.stable_nights < 1 or self.drifted_nights < 1:
            raise ValueError("the demo needs at least one stable and one drifted night")
        if self.stable_nights + self.drifted_nights >= self.days:
            nights = self.stable_nights + self.drifted_nights
            raise ValueError(f"{self.days} days cannot hold {nights} monitored nights and the history before them")
        if self.promotion and (self.maturity_days < 1 or self.evidence_days < 1):
            raise ValueError("the promotion path needs maturity_days and evidence_days of at least 1")
        if self.promotion and (self.end - self.first_monitored).days + 1 >= self.days:
            raise ValueError(f"{self.days} days are too few for the promotion path's monitored nights")
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {', '.join(SOURCES)}")

    def environment(self) -> dict[str, str]:
        """The stack's settings for this plan (:data:`DEMO_ENVIRONMENT`, plus the promotion path's)."""
        if not self.promotion:
            return dict(DEMO_ENVIRONMENT)
        # One retraining in the run: the cooldown outlasts the nights after the retraining night.
        cooldown = (self.maturity_days + self.evidence_days + 2) * 24
        return {
            **DEMO_ENVIRONMENT,
            "LOOPLINE__PROMOTION__POLICY": "shadow_first",
            "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": str(self.maturity_days),
            "LOOPLINE__PROMOTION__MIN_DAYS": str(self.evidence_days),
            "LOOPLINE__PROMOTION__MIN_POSITIVES": "20",
            "LOOPLINE__DRIFT__COOLDOWN_HOURS": str(cooldown),
        }


# Configuration of the stack the demo starts. Its weekly train_model run would train "today" in the middle of
# a replay of past nights, and race the demo's first champion for the alias: routine retraining is off, runs
# are triggered (the demo's first champion, drift_monitor). A stack already running keeps its own settings.
DEMO_ENVIRONMENT = {"LOOPLINE__TRAINING__SCHEDULE": "null"}

# ``loopline demo --source``: the demo's inputs. ``postgres``: the generated days are tables of SOURCE_SCHEMA in
# the stack's own database, read through its loader connection (postgres.conn_id).
SOURCES = ("landing", "postgres")
SOURCE_SCHEMA = "demo_source"


def source_environment(plan: DemoPlan, cfg: LooplineConfig) -> dict[str, str]:
    """The configuration of the plan's source: nothing for the landing drop; for ``postgres``, both inputs
    as PostgreSQL sources (``sources.transactions`` / ``sources.labels`` overrides, the watermark included):
    the DAGs, the range backfill and the sensors read them from the configuration, with no demo code path."""
    if plan.source == "landing":
        return {}
    from loopline.sources_postgres import source_settings

    return source_settings(SOURCE_SCHEMA, cfg.postgres.conn_id)


def write_source_tables(cfg: LooplineConfig, files: Path, echo: Callable[[str], None]) -> None:
    """``--source postgres``: the generated days into SOURCE_SCHEMA's tables (as the stack's superuser, read
    access granted to the loader role the tasks log in as), then the files go: the landing drops are what
    the runs extract from the tables."""
    import shutil

    import psycopg2

    from loopline.sources_postgres import write_days

    pg = stack.embedded_pg()
    if pg is None:  # a predictions database outside the stack: the demo cannot create tables in it for you
        raise RuntimeError(
            "loopline demo --source postgres writes its source tables into the stack's embedded PostgreSQL, and "
            "this stack has none (its database is configured elsewhere). Run it on a stack of its own "
            "(`loopline down`, then `loopline demo --source postgres`), or load your tables as docs/your-own-data.md "
            "shows and run `loopline demo`."
        )
    conn = psycopg2.connect(host=pg.host, port=pg.port, user="postgres", dbname="loopline")
    try:
        loaded = write_days(conn, SOURCE_SCHEMA, files, read_role=cfg.postgres.loader_role)
    finally:
        conn.close()
    shutil.rmtree(files)
    echo(
        f"   written to PostgreSQL: {SOURCE_SCHEMA}.transactions {loaded['transactions']} rows, "
        f"{SOURCE_SCHEMA}.labels {loaded['labels']} rows, watermark {SOURCE_SCHEMA}.load_watermark; each day's "
        "rows are extracted into its landing drop by the run that ingests it"
    )
