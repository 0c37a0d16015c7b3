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


# In a job over several days at once (a range backfill's chunk), the day a row belongs to.
FOR_DS = "for_ds"


def read_days(spark, lake, table: str, versions: dict[dt.date, str | None]):
    """The given versions of a table's daily partitions as one relation with a ``ds`` date column (None when
    no day has one).

    One read over many paths with ``basePath``: Spark plans it once and takes ``ds`` from the path.
    """
    from pyspark.sql import functions as F

    uris = [lake.version_uri(table, day, version) for day, version in sorted(versions.items()) if version]
    if not uris:
        return None
    frame = spark.read.option("basePath", lake.table_uri(table)).parquet(*uris)
    return frame.drop("run").withColumn("ds", F.col("ds").cast("date"))


def write_days(frame, lake, table: str, days: list[dt.date], versions: dict[dt.date, str] | None = None):
    """Write a frame of several days (its ``for_ds`` column) as a new, uncommitted version of each day's
    partition (``versions``, default new ones), in one Spark job; returns the version per day.

    The rows go straight into the lake's layout (``ds=<day>/run=<version>/``, partition columns out of the
    files, as a one-day write). Each version gets its ``_SUCCESS`` once the whole job succeeded: a job that
    dies leaves folders :meth:`loopline.lake.Lake.commit` refuses. The days without rows share one empty
    version written by Spark (the schema, no rows), copied to each.
    """
    from pyspark.sql import functions as F

    from loopline import lake as tables

    versions = versions or {day: tables.new_version() for day in days}
    if len(days) == 1:  # one day (a daily run): a plain write into its version, Spark's own _SUCCESS included
        day = days[0]
        frame.where(F.col(FOR_DS) == F.lit(day)).drop(FOR_DS).write.mode("overwrite").parquet(
            lake.version_uri(table, day, versions[day])
        )
        return versions
    mapping = frame.sparkSession.createDataFrame([(day, versions[day]) for day in days], f"{FOR_DS} date, run string")
    (
        frame.join(F.broadcast(mapping), FOR_DS)
        .withColumnRenamed(FOR_DS, "ds")
        # Dynamic overwrite touches only the (new) version folders written, and stages them in a folder of
        # this job's own: an append's staging folder at the table root is shared with every other job.
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")  # the versions get theirs below
        .partitionBy("ds", "run")
        .parquet(lake.table_uri(table))
    )
    empty = []
    for day in days:
        if lake.version_written(table, day, versions[day]):
            lake.mark_written(table, day, versions[day])
        else:
            empty.append(day)
    if empty:
        template = lake.version_uri(table, empty[0], versions[empty[0]])
        frame.where(F.lit(False)).drop(FOR_DS).write.mode("overwrite").parquet(template)
        for day in empty[1:]:
            lake.copy_version(table, (empty[0], versions[empty[0]]), (day, versions[day]))
    return versions
