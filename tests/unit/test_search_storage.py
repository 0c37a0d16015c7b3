"""Where the search keeps its Optuna study: the loader's connection, in the search schema, unless configured."""

from __future__ import annotations

import json

import pytest

from loopline.orchestration.training_tasks import _with_search_storage
from loopline.training.search import STORAGE_ENV, rdb_url


def test_the_storage_url_points_optuna_at_its_schema():
    url = rdb_url("postgres://loader@127.0.0.1:15432/loopline?sslmode=disable", "loopline_search")
    assert url.startswith("postgresql+psycopg2://loader@127.0.0.1:15432/loopline?")
    assert "sslmode=disable" in url
    assert "options=-csearch_path%3Dloopline_search" in url
    with pytest.raises(ValueError, match="needs a Postgres connection"):
        rdb_url("sqlite:///x.db", "loopline_search")


def test_the_local_trainer_gets_the_loaders_connection(monkeypatch):
    conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": 15432, "login": "ldr", "schema": "loopline"}
    monkeypatch.setenv("AIRFLOW_CONN_LOOPLINE_POSTGRES", json.dumps(conn))
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    env = _with_search_storage({"KEEP": "1"})
    assert env["KEEP"] == "1"
    assert env[STORAGE_ENV].split("://")[1].startswith("ldr@127.0.0.1:15432/loopline?")
    assert env[STORAGE_ENV].endswith("options=-csearch_path%3Dloopline_search")
    # a URL already given wins, and no connection means an in-memory study
    assert _with_search_storage({STORAGE_ENV: "postgresql://x/y"})[STORAGE_ENV] == "postgresql://x/y"
    monkeypatch.delenv("AIRFLOW_CONN_LOOPLINE_POSTGRES")
    assert STORAGE_ENV not in _with_search_storage({})
