# syntax=docker/dockerfile:1
# Loopline's Spark Connect server image (service `spark-connect` in docker-compose.yaml).
#
#   docker build -f docker/spark-connect.Dockerfile -t loopline/spark-connect:0.1.0 .   # context = repo root
#
# Why not apache/spark:4.1.x: Python UDFs (MLflow's spark_udf scoring with models:/<name>@champion, pandas
# UDFs) are pickled by the client, the Airflow worker on Python 3.11, and run in this server's Python
# workers, which must be the same Python minor version and carry the same libraries (mlflow, xgboost,
# torch, the loopline package). The apache/spark images ship their distribution's Python (3.10 or 3.12).
# So this image is Python 3.11 + Java 17 + the pyspark wheel pinned by constraints.txt (it contains the
# complete Spark runtime, Spark Connect server included: the same server the embedded stack starts),
# plus the S3A connector, which Spark does not bundle.
FROM python:3.11-slim-bookworm

# hadoop-aws must match the Hadoop client jars inside pyspark (Spark 4.1.x bundles Hadoop 3.4.2; the
# build fails below if they disagree). Its dependencies (the AWS SDK v2 bundle the Hadoop release was
# built against) are resolved from Maven Central by Spark's own --packages resolver at build time.
ARG HADOOP_AWS_VERSION=3.4.2

RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends openjdk-17-jre-headless procps; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --uid 185 --gid 0 --create-home --home-dir /home/spark --shell /usr/sbin/nologin spark

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
RUN python -m venv /opt/venv

WORKDIR /opt/loopline
COPY constraints.txt ./
# torch from PyTorch's CPU index first (constraints pin torch==2.13.0+cpu), then the UDF runtime, every
# version pinned by constraints.txt. pyspark (the full wheel, not pyspark-client) is the server itself.
RUN pip install --no-cache-dir --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu" \
    && pip install --no-cache-dir -c constraints.txt \
        torch pyspark pandas pyarrow numpy scikit-learn xgboost mlflow boto3 pydantic pyyaml

ENV SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python
RUN set -eux; \
    test -f "${SPARK_HOME}/jars/hadoop-client-api-${HADOOP_AWS_VERSION}.jar" \
      || { echo "hadoop-aws ${HADOOP_AWS_VERSION} does not match pyspark's Hadoop:"; \
           ls "${SPARK_HOME}/jars" | grep hadoop-client; exit 1; }; \
    test -f "${SPARK_HOME}/jars/spark-connect_2.13-$(python -c 'import pyspark; print(pyspark.__version__)').jar"; \
    echo 'pass' > /tmp/noop.py; \
    spark-submit --master 'local[1]' --conf spark.jars.ivy=/tmp/ivy \
        --packages "org.apache.hadoop:hadoop-aws:${HADOOP_AWS_VERSION}" /tmp/noop.py; \
    cp /tmp/ivy/jars/*.jar "${SPARK_HOME}/jars/"; \
    rm -rf /tmp/ivy /tmp/noop.py; \
    ls "${SPARK_HOME}/jars" | grep -E 'hadoop-aws|awssdk'; \
    install -d -o 185 -g 0 /tmp/spark-local

# The loopline package and spark_jobs, importable by the Python workers (docker-compose.yaml mounts the
# same folders read-only on top, like it does for the Airflow containers).
COPY include ./include
COPY spark_jobs ./spark_jobs
ENV PYTHONPATH=/opt/loopline/include:/opt/loopline
RUN python -c "from loopline.config import load_config; load_config()"

USER 185
WORKDIR /home/spark
EXPOSE 15002 4040
# docker-compose.yaml passes the full spark-submit command line (S3A endpoint, ports); this default is a
# bare server for `docker run`.
CMD ["spark-submit", "--class", "org.apache.spark.sql.connect.service.SparkConnectServer", "spark-internal"]
