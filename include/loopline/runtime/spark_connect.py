"""The Spark Connect server of the embedded profile (spark-submit from the pyspark wheel, loopback only)."""

from __future__ import annotations

from loopline.config import LooplineConfig, loopline_home
from loopline.runtime.supervisor import Health, host_port, port_open, spark_home


def _conf(value: str | bool | int | float) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)  # YAML's true is Spark's "true"


def spark_command(cfg: LooplineConfig) -> list[str]:
    """spark-submit the Spark Connect server bound to the configured loopback address."""
    host, port = host_port(cfg.spark.connect_url, 15002)
    return [
        str(spark_home() / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--name",
        "loopline-spark-connect",
        "--driver-memory",
        cfg.spark.driver_memory,
        "--conf",
        f"spark.connect.grpc.binding.address={host}",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        f"spark.sql.shuffle.partitions={cfg.spark.shuffle_partitions}",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        f"spark.local.dir={loopline_home() / 'spark-tmp'}",
        *[arg for key, value in sorted(cfg.spark.server_conf.items()) for arg in ("--conf", f"{key}={_conf(value)}")],
        "spark-internal",
    ]


def spark_health(cfg: LooplineConfig) -> Health:
    host, port = host_port(cfg.spark.connect_url, 15002)
    ok = port_open(host, port)
    return Health("spark-connect", ok, f"{cfg.spark.connect_url} {'accepting' if ok else 'not answering'}")
