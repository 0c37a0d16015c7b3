"""Least privilege in the predictions database: what the loader and the analyst may do, and what they may not.

The session's roles come from ``tests/conftest.py`` (``postgres.roles``): bootstrapped once by the superuser,
each schema migrated by the owner (``postgres.migrate``), as ``loopline migrate`` does.
"""

from __future__ import annotations

import shutil
import uuid

import psycopg2
import pyarrow.parquet as pq
import pytest
from psycopg2 import errors

from loopline import db, registry
from loopline.config import get_config
from loopline.score_load import load_day
from tests.integration.test_score_load import DS, run_row, scores

pytestmark = pytest.mark.integration


@pytest.fixture
def schema(postgres):
    name = f"roles_{uuid.uuid4().hex[:8]}"
    postgres.migrate(name)
    yield name
    admin = postgres.connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    admin.close()


def refused(conn, sql: str, *args) -> str:
    """Run ``sql``; it must be refused for lack of privilege. Returns the server's message."""
    with pytest.raises(psycopg2.Error) as caught, conn.cursor() as cur:
        cur.execute(sql, args)
    conn.rollback()
    assert isinstance(caught.value, errors.InsufficientPrivilege), caught.value
    return str(caught.value)


def rows(conn, sql: str, *args) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        result = cur.fetchall()
    conn.rollback()
    return result


def test_the_analyst_reads_the_analyst_relations_and_nothing_else(postgres, schema):
    with postgres.connect_loader() as loader:
        load_day(loader, schema, run_row(), scores(DS, 20))
    other = f"other_{uuid.uuid4().hex[:8]}"
    admin = postgres.connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            f"CREATE SCHEMA {other}; CREATE TABLE {other}.secrets (v text); INSERT INTO {other}.secrets VALUES ('x')"
        )
        cur.execute(f"CREATE TABLE public.{other} (v text)")
    analyst = postgres.connect(postgres.roles.analyst)
    try:
        for relation in db.ANALYST_RELATIONS:
            rows(analyst, f"SELECT * FROM {schema}.{relation} LIMIT 1")
        assert rows(analyst, f"SELECT count(*) FROM {schema}.latest_scores") == [(20,)]
        for sql in (
            f"INSERT INTO {schema}.transaction_scores (ds) VALUES ('2026-01-01')",
            f"UPDATE {schema}.transaction_scores SET score = 0",
            f"DELETE FROM {schema}.transaction_scores",
            f"TRUNCATE {schema}.scoring_runs",
            f"INSERT INTO {schema}.drift_runs (ds) VALUES ('2026-01-01')",
            f"CREATE TABLE {schema}.mine (v int)",
            f"CREATE VIEW {schema}.mine AS SELECT 1",
            f"SELECT * FROM {schema}.schema_migrations",
            f"SELECT * FROM {other}.secrets",
            f"SELECT * FROM public.{other}",
            f"CREATE TABLE public.analyst_{other} (v int)",
            f"CREATE SCHEMA analyst_{other}",
        ):
            refused(analyst, sql)
        assert rows(analyst, f"SELECT count(*) FROM {schema}.transaction_scores") == [(20,)]  # nothing changed
    finally:
        analyst.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {other} CASCADE; DROP TABLE public.{other}")
        admin.close()


def test_the_loader_loads_but_runs_no_ddl_and_never_writes_the_ledger(postgres, schema):
    loader = postgres.connect_loader()
    try:
        assert load_day(loader, schema, run_row(), scores(DS, 50))["loaded"] == 50
        move = registry.AliasMove("fraud", "champion", 2, 1, "run2", "manual", "test", "promoted", {"roc_auc": 0.9})
        registry.record_move(loader, schema, move)  # a bigserial: USAGE on the sequence
        assert db.require_current(loader, schema) == db.latest_version()  # reads the ledger
        assert loader.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE  # left no transaction
        for sql in (
            f"CREATE TABLE {schema}.mine (v int)",
            f"CREATE INDEX mine ON {schema}.transaction_scores (score)",
            f"ALTER TABLE {schema}.transaction_scores ADD COLUMN mine int",
            f"DROP TABLE {schema}.scoring_runs",
            f"DROP VIEW {schema}.latest_scores",
            f"CREATE OR REPLACE VIEW {schema}.latest_scores AS SELECT 1",
            f"TRUNCATE {schema}.transaction_scores",
            f"INSERT INTO {schema}.schema_migrations (version) VALUES ('V999')",
            f"UPDATE {schema}.schema_migrations SET version = 'V999'",
            f"DELETE FROM {schema}.schema_migrations",
            "CREATE SCHEMA loader_mine",
            "CREATE TABLE public.loader_mine (v int)",
        ):
            message = refused(loader, sql)
            assert "permission denied" in message or "must be owner" in message, message
        with pytest.raises(psycopg2.Error, match="permission denied"):
            db.migrate(loader, schema, roles=postgres.roles)  # cannot become the owner
        assert rows(loader, f"SELECT count(*) FROM {schema}.transaction_scores") == [(50,)]
        owned = rows(
            loader,
            "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        )
        assert owned == [(0,)]
    finally:
        loader.close()


def test_the_loader_adds_evidence_but_cannot_rewrite_it(postgres, schema):
    """Digests and alias history are append-only for the task role: rewriting a digest would bless a tampered
    artifact, deleting history would hide a promotion. Only a history row's state may move (pending -> applied)."""
    from loopline import artifacts

    with postgres.connect_loader() as loader:
        artifacts.record_digests(loader, schema, "m", 1, {"model/booster.json": "a" * 64})
        with loader.cursor() as cur:
            cur.execute(
                f"INSERT INTO {schema}.model_alias_history (model_name, alias, version, run_id, triggered_by, reason,"
                " decision, state) VALUES ('m', 'champion', 1, 'r', 'test', 'r', 'd', 'pending') RETURNING id"
            )
            (row,) = cur.fetchone()
            cur.execute(f"UPDATE {schema}.model_alias_history SET state = 'applied' WHERE id = %s", (row,))
        loader.commit()
        refused(loader, f"UPDATE {schema}.model_artifact_digests SET sha256 = %s", "b" * 64)
        refused(loader, f"DELETE FROM {schema}.model_artifact_digests")
        refused(loader, f"UPDATE {schema}.model_alias_history SET version = 2")
        refused(loader, f"DELETE FROM {schema}.model_alias_history")
    assert postgres.query(f"SELECT sha256 FROM {schema}.model_artifact_digests") == [("a" * 64,)]
    assert postgres.query(f"SELECT version, state FROM {schema}.model_alias_history") == [(1, "applied")]


def test_tables_of_future_migrations_are_granted_without_code_changes(postgres, schema, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(db.SQL_DIR, sql_dir)
    (sql_dir / "V999__future.sql").write_text(
        "CREATE TABLE IF NOT EXISTS ${schema}.future_things (id bigserial PRIMARY KEY, v text);\n"
        "ALTER TABLE ${schema}.scoring_runs ADD COLUMN IF NOT EXISTS future_note text;\n"
    )
    admin = postgres.connect()
    try:
        assert db.migrate(admin, schema, sql_dir=sql_dir, roles=postgres.roles) == ["V999"]
    finally:
        admin.close()
    with postgres.connect_loader() as loader, loader.cursor() as cur:
        cur.execute(f"INSERT INTO {schema}.future_things (v) VALUES ('a') RETURNING id")
        assert cur.fetchone() == (1,)
        assert db.require_current(loader, schema, sql_dir) == "V999"
    analyst = postgres.connect(postgres.roles.analyst)
    try:
        refused(analyst, f"SELECT * FROM {schema}.future_things")  # not in ANALYST_RELATIONS
        rows(analyst, f"SELECT future_note FROM {schema}.scoring_runs")  # a new column of a granted table
    finally:
        analyst.close()


def test_migrate_is_idempotent_and_bootstrap_can_run_again(postgres, schema):
    assert postgres.migrate(schema) == []
    admin = postgres.connect()
    try:
        db.bootstrap(admin, get_config(), roles=postgres.roles)
        with admin.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s AND pg_get_userbyid(nspowner) = %s",
                (schema, postgres.roles.owner),
            )
            assert cur.fetchone() == (1,)
            cur.execute(f"SELECT count(*) FROM {schema}.schema_migrations")
            assert cur.fetchone() == (len(db.migration_files()),)
            cur.execute(
                "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                (schema,),
            )
            assert cur.fetchall() == [(postgres.roles.owner,)]
    finally:
        admin.close()


def test_a_load_against_an_unmigrated_schema_asks_for_loopline_migrate(postgres, tmp_path, monkeypatch):
    """batch_score's load task, as the loader, on a database one migration behind: a clear error, nothing written."""
    from loopline.orchestration import scoring_tasks

    name = f"behind_{uuid.uuid4().hex[:8]}"
    behind = tmp_path / "sql"
    behind.mkdir()
    for path in db.migration_files()[:-1]:
        shutil.copy(path, behind / path.name)
    admin = postgres.connect()
    db.migrate(admin, name, sql_dir=behind, roles=postgres.roles)
    lake = tmp_path / "scores"
    lake.mkdir()
    pq.write_table(scores(DS, 30), lake / "part-0.parquet")
    scored = {
        "uri": str(lake),
        "model": {"name": "fraud", "version": 1, "run_id": "run1"},
        "flagged": 3,
        "explained": 3,
        "seconds": 0.1,
    }
    monkeypatch.setenv("LOOPLINE__POSTGRES__SCHEMA", name)
    get_config.cache_clear()
    try:
        previous = db.version_of(db.migration_files()[-2])
        expected = f"database schema at {previous}, code expects {db.latest_version()}: run `loopline migrate`"
        with pytest.raises(db.SchemaOutdatedError) as caught:
            scoring_tasks._load(scored, "champion", DS.isoformat(), "manual__behind")
        assert str(caught.value) == expected
        with admin.cursor() as cur:
            cur.execute(
                f"SELECT (SELECT count(*) FROM {name}.transaction_scores), (SELECT count(*) FROM {name}.scoring_runs)"
            )
            assert cur.fetchone() == (0, 0)
        admin.rollback()

        loader = postgres.connect_loader()
        with pytest.raises(db.SchemaOutdatedError, match=r"is not migrated .*run `loopline migrate`"):
            db.require_current(loader, f"nothing_{uuid.uuid4().hex[:8]}")
        loader.close()

        # once migrated (deploy time, as the owner), the same task loads the day as the loader
        db.migrate(admin, name, roles=postgres.roles)
        result = scoring_tasks._load(scored, "champion", DS.isoformat(), "manual__behind")
        assert result["loaded"] == 30
    finally:
        get_config.cache_clear()
        admin.rollback()
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.close()


def test_latest_version_comes_from_the_files(tmp_path):
    for name in ("V001__a.sql", "V002__b.sql", "V010__c.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    assert db.latest_version(tmp_path) == "V010"
    assert db.latest_version() == db.version_of(sorted(db.SQL_DIR.glob("V*.sql"))[-1])
    with pytest.raises(ValueError, match="must differ"):
        db.Roles("a", "a", "b")
    with pytest.raises(ValueError, match="identifier"):
        db.Roles("a; DROP", "b", "c")


@pytest.mark.parametrize("how", ["owner", "admin"])
def test_loopline_migrate_through_a_connection(postgres, monkeypatch, capsys, how):
    """`loopline migrate` against a database the stack did not start: as the owner (postgres.owner_conn_id), or
    through an administrator's connection that first bootstraps the roles (compose's predictions-migrate)."""
    import json

    from loopline import cli

    name = f"cli_{uuid.uuid4().hex[:8]}"
    login = postgres.roles.owner if how == "owner" else postgres.user
    connection = {"conn_type": "postgres", "host": postgres.host, "port": postgres.port, "login": login}
    variable = "AIRFLOW_CONN_LOOPLINE_POSTGRES_OWNER" if how == "owner" else "AIRFLOW_CONN_LOOPLINE_POSTGRES_ADMIN"
    monkeypatch.setenv(variable, json.dumps({**connection, "schema": postgres.database}))
    monkeypatch.setenv("LOOPLINE__POSTGRES__SCHEMA", name)
    get_config.cache_clear()
    args = ["migrate"] if how == "owner" else ["migrate", "--admin-conn-id", "loopline_postgres_admin"]
    try:
        assert cli.main(args) == 0
        assert f"schema {name} at {db.latest_version()}: applied V001" in capsys.readouterr().out
        assert cli.main(args) == 0
        assert "nothing to apply" in capsys.readouterr().out
        with postgres.connect_loader() as loader:
            assert db.require_current(loader, name) == db.latest_version()
        owners = postgres.query(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            name,
        )
        assert owners == [(postgres.roles.owner,)]
    finally:
        get_config.cache_clear()
        admin = postgres.connect()
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.close()


def test_the_loader_keeps_an_optuna_study_in_the_search_schema_only(postgres, schema):
    """`loopline migrate` provisions the search schema: Optuna creates its tables there as the loader (so a killed
    search resumes from Postgres), while the analysts' schema stays closed to the loader's DDL."""
    import dataclasses

    import optuna

    from loopline.training.search import rdb_url

    search = f"search_{uuid.uuid4().hex[:8]}"
    roles = dataclasses.replace(postgres.roles, search_schema=search)
    admin = postgres.connect()
    try:
        db.migrate(admin, schema, roles=roles)
    finally:
        admin.close()
    try:
        uri = f"postgresql://{roles.loader}@{postgres.host}:{postgres.port}/{postgres.database}"
        storage = optuna.storages.RDBStorage(rdb_url(uri, search))
        study = optuna.create_study(study_name="resume-me", storage=storage, direction="maximize")
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
        storage.remove_session()
        storage.engine.dispose()
        # what PostgresHook.get_uri() gives the local runner: the psycopg 3 driver
        hook_uri = uri.replace("postgresql://", "postgresql+psycopg://")
        again = optuna.load_study(study_name="resume-me", storage=rdb_url(hook_uri, search))
        assert len(again.trials) == 2
        tables = rows(postgres.connect(), "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s", search)
        assert ("studies", roles.loader) in tables
        with postgres.connect_loader() as loader:
            refused(loader, f"CREATE TABLE {schema}.mine (v int)")
        analyst = postgres.connect(roles.analyst)
        try:
            refused(analyst, f"SELECT * FROM {search}.studies")
        finally:
            analyst.close()
    finally:
        admin = postgres.connect()
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {search} CASCADE")
        admin.close()


def test_daily_alerts_shows_realized_precision_once_the_days_labels_matured(postgres, schema):
    """The analysts' daily_alerts view: a scored day's flag rate at once, its realized precision and recall
    only once drift_monitor has measured the matured day (model_performance), and only for that version."""
    import datetime as dt

    later = DS + dt.timedelta(days=1)
    with postgres.connect_loader() as loader:
        load_day(loader, schema, run_row(), scores(DS, 20))
        load_day(loader, schema, run_row(later), scores(later, 20))
        with loader.cursor() as cur:
            cur.execute(
                f"INSERT INTO {schema}.model_performance (ds, model_name, model_version, evaluated_on, rows, "
                "unlabelled_rows, positives, flagged, threshold, precision_at_threshold, recall_at_threshold, "
                "performance_drop) VALUES (%s, 'fraud', 1, %s, 20, 0, 4, 5, 0.9, 0.6, 0.75, false)",
                (DS, DS + dt.timedelta(days=20)),
            )
        loader.commit()
    analyst = postgres.connect(postgres.roles.analyst)
    try:
        got = rows(
            analyst,
            f"SELECT ds, rows_scored, realized_precision, realized_recall, frauds FROM {schema}.daily_alerts "
            "ORDER BY ds",
        )
    finally:
        analyst.close()
    assert got == [(DS, 20, 0.6, 0.75, 4), (later, 20, None, None, None)]
