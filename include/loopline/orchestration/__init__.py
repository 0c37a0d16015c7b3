"""The Airflow-facing side of Loopline: shared DAG defaults and task callables for the DAG files.

Only this subpackage imports Airflow. DAG files import from here; the logic it calls lives in the rest of
the ``loopline`` package and knows nothing of Airflow.
"""
