"""The local runtime that only the embedded and cluster profiles use (production runs none of it).

- :mod:`~loopline.runtime.supervisor`: starts, watches and stops the stack's processes; health probes.
- :mod:`~loopline.runtime.credentials`: the stack's generated secrets.
- :mod:`~loopline.runtime.postgres`: the embedded PostgreSQL, its roles and migrations.
- :mod:`~loopline.runtime.spark_connect`: the Spark Connect server.
- :mod:`~loopline.runtime.mlflow_server`: the MLflow tracking server behind basic auth.
- :mod:`~loopline.runtime.airflow_components`: Airflow's processes, their environment and health.
- :mod:`~loopline.runtime.airflow_api`: the client of Airflow's REST API.

:mod:`loopline.stack` puts them together per profile (``loopline up`` / ``down`` / ``status``) and
:mod:`loopline.cluster` adds the cluster profile's services.
"""
