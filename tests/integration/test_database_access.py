"""How every task opens the predictions database: through the loader's Airflow connection, schema checked."""

from __future__ import annotations

import pytest

from loopline.config import get_config
from loopline.db import SchemaOutdatedError
from loopline.orchestration.database import open_predictions_db, predictions_db

pytestmark = pytest.mark.integration


@pytest.fixture
def schema(postgres, monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setenv("LOOPLINE__POSTGRES__SCHEMA", name)
        get_config.cache_clear()

    yield use
    monkeypatch.delenv("LOOPLINE__POSTGRES__SCHEMA", raising=False)
    get_config.cache_clear()


def test_a_task_logs_in_as_the_loader_on_a_current_schema(postgres, schema):
    postgres.migrate("dbaccess_current")
    schema("dbaccess_current")
    with predictions_db() as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == postgres.loader
    assert conn.closed


def test_an_unmigrated_schema_fails_at_once_with_the_command_that_fixes_it(postgres, schema):
    schema("dbaccess_never_migrated")
    with pytest.raises(SchemaOutdatedError, match="run `loopline migrate`"):
        open_predictions_db(get_config())
