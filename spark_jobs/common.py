"""What every Spark entrypoint shares: argument parsing and the session, whatever runs the job.

Under Airflow the task hands the job a ready Spark Connect session (``@task.pyspark``); under spark-submit
(cluster or YARN/EMR/k8s) ``main`` builds a session from the submit's own configuration; from a shell,
``--remote`` or the configured Spark Connect URL is used. The job functions themselves never care.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from collections.abc import Callable


def parse_args(
    description: str, argv: list[str] | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """``--ds`` and ``--remote``, plus whatever ``extra`` adds for one job."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--ds", required=True, type=dt.date.fromisoformat, help="logical date, YYYY-MM-DD")
    parser.add_argument(
        "--remote",
        help="Spark Connect URL (default: spark-submit's session if there is one, else the configured URL)",
    )
    return parser.parse_args(argv)


def session(remote: str | None):
    """A Spark session: Spark Connect when a URL is given or configured, else spark-submit's own."""
    from pyspark.sql import SparkSession

    from loopline.config import get_config

    if remote is None and "SPARK_ENV_LOADED" not in os.environ and "SPARK_SUBMIT" not in os.environ:
        remote = get_config().spark.connect_url
    builder = SparkSession.builder.appName("loopline")
    if remote:
        return builder.remote(remote).getOrCreate()
    return builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()


def print_result(result: dict) -> None:
    """Entry points print their result as one JSON line, so any runner can pick it up."""
    print(json.dumps(result, sort_keys=True, default=str))
