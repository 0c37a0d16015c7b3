"""One DagBag for the whole session: parsing the DAG folder once is what the scheduler does too."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))
