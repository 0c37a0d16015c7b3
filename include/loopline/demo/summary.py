"""What the loop produced, read back for the demo's summary: champions, scored AUC against the truth,
retraining decisions, alerts and row counts in the lake (Postgres, MLflow, the lake; no Airflow).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

from loopline import lake as tables
from loopline import stack
from loopline.config import LooplineConfig, resolve_uri
from loopline.lake import Lake


def _query(sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of one query on the stack's predictions database (as the superuser over its socket)."""
    import psycopg2

    pg = stack.embedded_pg()
    conn = psycopg2.connect(host=pg.host, port=pg.port, user="postgres", dbname="loopline")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def champion(cfg: LooplineConfig) -> tuple[str, int] | None:
    """The champion's (run id, version), or None before the first promotion."""
    version = alias_model(cfg, "champion")
    return (version.run_id, int(version.version)) if version is not None else None


def scored_auc(cfg: LooplineConfig, truth: Path, days: list[dt.date], table: str = tables.SCORES) -> dict:
    """ROC AUC of the published scores of ``days`` (``table``: the champion's, or the shadow's) and of the
    generator's true probabilities, same rows; ``days`` in the result are those that had scores."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    frames, scored = [], []
    for day in days:
        uri = lake.partition(table, day)
        files = sorted((truth / f"ds={day}").glob("part-*.csv*"))
        if uri is None or not files:
            continue
        scored.append(day)
        scores = pd.read_parquet(uri, columns=["transaction_id", "score", "model_version"])
        frames.append(scores.merge(pd.concat(pd.read_csv(f) for f in files), on="transaction_id"))
    if not frames:
        return {}
    rows = pd.concat(frames)
    return {
        "model_auc": float(roc_auc_score(rows["is_fraud"], rows["score"])),
        "true_auc": float(roc_auc_score(rows["is_fraud"], rows["fraud_probability"])),
        "rows": len(rows),
        "versions": sorted(int(v) for v in rows["model_version"].unique()),
        "days": scored,
    }


def retraining_decisions(cfg: LooplineConfig, days: list[dt.date]) -> list[tuple]:
    """drift_monitor's decision per night: (ds, triggered, reason, train_run_id)."""
    return _query(
        f"SELECT ds, triggered, reason, train_run_id FROM {cfg.postgres.schema_}.retraining_decisions "  # noqa: S608 (identifier validated by the config loader)
        "WHERE ds BETWEEN %s AND %s ORDER BY ds",
        (min(days), max(days)),
    )


def alert_summary(cfg: LooplineConfig) -> list[str]:
    """Per scored day (``daily_alerts``): the flag rate against the alert policy's band, and the realized
    precision and recall once the day's labels matured."""
    columns = (
        "ds, model_version, threshold, rows_scored, rows_flagged, alert_rate, alert_band_low, "
        "alert_band_high, alert_out_of_band, realized_precision, realized_recall, frauds"
    )
    # the schema is an identifier validated by the config loader
    rows = _query(f"SELECT {columns} FROM {cfg.postgres.schema_}.daily_alerts ORDER BY ds")  # noqa: S608
    lines = []
    for ds, version, threshold, scored, flagged, rate, low, high, out, precision, recall, frauds in rows:
        band = f"band [{low:.2%}, {high:.2%}]{' ALERT' if out else ''}" if low is not None else "no policy band"
        realized = (
            f"realized precision {precision:.3f}, recall {recall:.3f} ({frauds} frauds)"
            if precision is not None and recall is not None
            else "labels not matured yet"
        )
        rate = rate if rate is not None else (flagged / scored if scored else 0.0)
        lines.append(
            f"{ds} v{version} threshold {threshold:.4g}: flagged {flagged} of {scored} ({rate:.2%}), {band}; {realized}"
        )
    return lines


def champion_summary(cfg: LooplineConfig) -> str:
    client = _client(cfg)
    lines = []
    for alias in ("champion", "challenger"):
        version = alias_model(cfg, alias)
        if version is None:
            continue
        metrics = client.get_run(version.run_id).data.metrics
        roc, pr = (metrics.get(f"holdout_{name}", float("nan")) for name in ("roc_auc", "pr_auc"))
        name = cfg.mlflow.registered_model
        lines.append(f"{alias}: {name} v{version.version}, holdout ROC AUC {roc:.4f}, PR AUC {pr:.4f}")
    return "\n".join(lines) or "no registered model yet"


def lake_summary(cfg: LooplineConfig, days: list[dt.date]) -> dict[str, int]:
    """Rows at each stage of the lake over ``days`` (from the committed partitions' stats)."""
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    totals: Counter[str] = Counter()
    for day in days:
        totals["raw transactions"] += lake.stats(tables.RAW_TRANSACTIONS, day).get("rows", 0)
        totals["quarantined transactions"] += lake.stats(tables.QUARANTINE_TRANSACTIONS, day).get("rows", 0)
        totals["feature rows"] += lake.stats(tables.FEATURES, day).get("rows", 0)
        totals["days with features"] += int(lake.partition(tables.FEATURES, day) is not None)
        scored = lake.stats(tables.SCORES, day)
        totals["scored transactions"] += scored.get("rows", 0)
        totals["flagged transactions"] += scored.get("flagged", 0)
    return dict(totals)


def alias_model(cfg: LooplineConfig, alias: str):
    """The registered model version ``alias`` points at (an MLflow ``ModelVersion``), or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(cfg).get_model_version_by_alias(cfg.mlflow.registered_model, alias)
    except MlflowException:
        return None


def _client(cfg: LooplineConfig):
    from loopline.training.tracking import mlflow_client

    return mlflow_client(resolve_uri(cfg.mlflow.tracking_uri))


EXAMPLE_SQL = """  -- the day's flagged transactions, riskiest first
  SELECT transaction_id, score, reasons FROM loopline.transaction_scores
   WHERE ds = '{day}' AND decision = 'flag' ORDER BY score DESC LIMIT 20;
  -- drift and retraining, night by night
  SELECT ds, triggered, reason FROM loopline.retraining_decisions ORDER BY ds;
  (psql -h 127.0.0.1 -p {pg_port} -U {analyst} -d loopline: read-only, see docs/analysts.md)"""


def _auc_line(label: str, auc: dict) -> str:
    if not auc:
        return f"{label}: no scored days"
    ratio = auc["model_auc"] / auc["true_auc"]
    versions = ", ".join(f"v{v}" for v in auc["versions"])
    return (
        f"{label}: {versions} ROC AUC {auc['model_auc']:.4f} vs true-probability AUC {auc['true_auc']:.4f} "
        f"(ratio {ratio:.3f}, {auc['rows']} rows)"
    )
