"""Loopline: a production ML loop on Apache Airflow 3.

The package holds all the logic; DAG files in ``dags/`` only wire it together. Modules that face Airflow
(``loopline.airflow``) are the only ones that import it; everything else is testable on its own.
"""

__version__ = "0.1.0"
