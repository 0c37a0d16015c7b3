"""A demo-like history in a running local stack, through the loop's own code: what the browser test shows on the
model-health page.

Run inside the stack's environment (``python -m tests.health_history --start ... --days ... --drift ...``):

- a scored lake of ``days`` days whose features drift from ``--drift`` on, scored by a registered champion
  (``tests.drift_data.scored_lake``), each day's scores loaded into Postgres by batch_score's loader
  (``score_load.load_day``), the first champion move recorded through ``registry.move_alias``;
- ``drift_monitor`` for every night from the second day on (``dag.test()`` against the stack's metadata database,
  labels maturing after ``--maturity`` days): drift tests, realized performance, the retraining decision;
- a second version promoted to champion the day after the drift night, through ``registry.move_alias`` as the
  promotion does (the history row pending, the alias move, the row applied).

Prints one JSON line: the nights and their DAG run states.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path


def _conn():
    from loopline.orchestration.database import open_predictions_db

    return open_predictions_db()


def _move(client, conn, schema: str, move) -> None:
    from loopline import registry

    registry.move_alias(
        client,
        move,
        lambda: client.set_registered_model_alias(move.model_name, move.alias, str(move.version)),
        conn=conn,
        schema=schema,
    )


def _load_scores(conn, schema: str, lake_root: Path, start: dt.date, days: int, run_id: str) -> None:
    """Each day's lake scores into ``transaction_scores`` and ``scoring_runs`` through the loader batch_score
    uses (``score_load.load_day``), with the day's flag rate checked against the version's alert band."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from loopline import lake as tables
    from loopline.lake import Lake
    from loopline.score_load import LOAD_COLUMNS, ScoringRun, load_day
    from loopline.thresholds import check_alert_rate

    lake = Lake(str(lake_root))
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        uri = lake.partition(tables.SCORES, day)
        table = lake.arrow_dataset(uri).to_table()
        for column in LOAD_COLUMNS:  # what the stand-in scorer leaves out (no explanations)
            if column not in table.column_names:
                table = table.append_column(column, pa.nulls(table.num_rows, pa.string()))
        first = table.slice(0, 1).to_pylist()[0]
        flagged = int(pc.sum(pc.equal(table["decision"], "flag")).as_py() or 0)
        check = check_alert_rate(table.num_rows, flagged, None)
        run = ScoringRun(
            ds=day,
            role="champion",
            model_name=str(first["model_name"]),
            model_version=int(first["model_version"]),
            model_run_id=run_id,
            threshold=float(first["threshold"]),
            rows_flagged=flagged,
            rows_explained=0,
            score_seconds=0.0,
            lake_uri=uri,
            airflow_run_id=f"health_history__{day}",
            alert_note=check.message,
        )
        load_day(conn, schema, run, table)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--drift", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--maturity", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ["LOOPLINE__FEATURES__LABEL_MATURITY_DAYS"] = str(args.maturity)

    from mlflow import MlflowClient

    from loopline.config import get_config, resolve_uri
    from loopline.registry import AliasMove
    from tests.drift_data import THRESHOLD, scored_lake
    from tests.models import fit, register

    get_config.cache_clear()
    cfg = get_config()
    tracking = resolve_uri(cfg.mlflow.tracking_uri)
    artifacts = Path(resolve_uri(cfg.mlflow.artifact_uri)) / "tests"
    name, schema = cfg.mlflow.registered_model, cfg.postgres.schema_
    run_id = scored_lake(
        Path(resolve_uri(cfg.storage.lake_uri)),
        tracking,
        artifacts,
        name,
        start=args.start,
        days=args.days,
        drift_start=args.drift,
        rows=args.rows,
    )
    client = MlflowClient(tracking)
    first = int(client.get_model_version_by_alias(name, "champion").version)
    conn = _conn()
    try:
        _load_scores(conn, schema, Path(resolve_uri(cfg.storage.lake_uri)), args.start, args.days, run_id)
        _move(
            client,
            conn,
            schema,
            AliasMove(
                model_name=name,
                alias="champion",
                version=first,
                previous_version=None,
                run_id=run_id,
                triggered_by="manual",
                reason="first model of the loop",
                decision="first champion",
                moved_at=f"{args.start}T06:00:00+00:00",
            ),
        )
    finally:
        conn.close()

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags" / "drift_monitor.py")).get_dag(
        "drift_monitor"
    )
    nights = {}
    for offset in range(1, args.days):
        night = args.start + dt.timedelta(days=offset)
        dagrun = dag.test(logical_date=dt.datetime.combine(night, dt.time(), tzinfo=dt.UTC))
        nights[str(night)] = dagrun.state

    # The retrained model, promoted the morning after the drift night (as the gate or an approval moves it).
    retrained = register(fit("xgboost", seed=6, rounds=30), tracking, artifacts, name, None, THRESHOLD)
    promoted = args.drift + dt.timedelta(days=1)
    conn = _conn()
    try:
        _move(
            client,
            conn,
            schema,
            AliasMove(
                model_name=name,
                alias="champion",
                version=retrained,
                previous_version=first,
                run_id=client.get_model_version(name, str(retrained)).run_id,
                triggered_by=f"drift_monitor__{args.drift}",
                reason=f"retrained after the drift of {args.drift}",
                decision=f"promoted: v{retrained} beat v{first} on the holdout",
                moved_at=f"{promoted}T06:00:00+00:00",
            ),
        )
    finally:
        conn.close()
    result = {"nights": nights, "champion": retrained}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
