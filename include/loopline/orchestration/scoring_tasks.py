"""Tasks of the ``batch_score`` DAG: resolve the models once, score on Spark, load Postgres atomically.

``resolve_models`` pins the run to concrete registry versions (its XCom): retries and later tasks score
with those versions even if ``champion`` moves meanwhile. Clearing the whole run (or a backfill with
``--reprocess-behavior completed``) resolves again, which is how history is re-scored with a new champion.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from loopline import lineage
from loopline.config import get_config
from loopline.orchestration.database import open_predictions_db, predictions_db
from loopline.orchestration.lineage import namespace, report_lineage
from loopline.orchestration.spark_access import SPARK_TASK

# Its name is the scores' lineage dataset name (each day's partition: ``loopline_scores/ds=<ds>``).
SCORES_ASSET = Asset(name=lineage.SCORES_ASSET, group="loopline")


def _client():
    from loopline.orchestration.mlflow_access import mlflow_client

    return mlflow_client()


@task  # no champion fails at once (AirflowFailException); registry outages keep the retries
def resolve_models(params: dict | None = None) -> dict:
    """The version that scores the day (required) and the challenger's (optional, for shadow scoring).

    The trigger form decides which (:func:`loopline.orchestration.forms.score_params`): ``model_version`` (a
    concrete version), else ``model_alias`` (``champion`` for scheduled runs); ``shadow`` turns the challenger
    off or on for this run.
    """
    from loopline.orchestration.forms import param
    from loopline.scoring import (
        CHALLENGER_ALIAS,
        CHAMPION_ALIAS,
        SHADOW_ALIAS,
        NoModel,
        resolve_model,
        resolve_version,
    )

    cfg = get_config()
    client = _client()
    name = cfg.mlflow.registered_model
    version = param(params, "model_version", None)
    alias = param(params, "model_alias", CHAMPION_ALIAS)
    try:
        primary = resolve_version(client, name, int(version)) if version else resolve_model(client, name, alias)
    except NoModel as exc:
        raise AirflowFailException(f"no model to score with: {exc}") from exc
    challenger = None
    if param(params, "shadow", cfg.scoring.shadow):
        # The shadow (promotion.policy shadow_first: the gate's winner awaiting its evidence) when there is one,
        # else the challenger: scored into transaction_scores_shadow either way.
        for alias in (SHADOW_ALIAS, CHALLENGER_ALIAS):
            if primary.alias == alias:
                continue
            try:
                found = resolve_model(client, name, alias)
            except NoModel:
                continue
            if found.version != primary.version:
                challenger = found.as_dict()
                break
    ns = namespace()
    pinned = [primary.as_dict(), *([challenger] if challenger else [])]
    report_lineage([lineage.model_version(ns, m["name"], m["version"]) for m in pinned], [])
    return {"champion": primary.as_dict(), "challenger": challenger}


def verified_package(cfg: Any, model: Any, tracking: str) -> bytes:
    """:func:`loopline.scoring.package_model` with the digests read from the predictions database.

    A tampered, never-gated or (without the opt-in) pickled version fails the task at once: retrying
    cannot fix the model store.
    """
    from loopline import artifacts
    from loopline.scoring import package_model

    conn = open_predictions_db(cfg)
    try:
        return package_model(
            model,
            tracking,
            conn=conn,
            schema=cfg.postgres.schema_,
            allow_pickled=cfg.registry.allow_pickled_models,
        )
    except artifacts.ArtifactError as exc:
        raise AirflowFailException(str(exc)) from exc
    finally:
        conn.close()


def _score(models: dict, role: str, ds: str, spark: Any) -> dict:
    import logging

    from loopline import lake as tables
    from loopline.orchestration.mlflow_access import configure_mlflow
    from loopline.scoring import ModelRef
    from spark_jobs import score

    cfg = get_config()
    model = ModelRef(**models[role])
    blob = verified_package(cfg, model, configure_mlflow(cfg))
    table = tables.SCORES if role == "champion" else tables.SCORES_SHADOW
    try:
        result = score.run(spark, dt.date.fromisoformat(ds), model, blob, cfg, table)
    except score.FeaturesMissing as exc:
        raise AirflowFailException(str(exc)) from exc
    logging.getLogger(__name__).info(
        "%s v%s scored ds=%s: %d rows, %d flagged, %d explained in %.1f s -> %s",
        model.name,
        model.version,
        ds,
        result["rows"],
        result["flagged"],
        result["explained"],
        result["seconds"],
        result["uri"],
    )
    ns = namespace()
    report_lineage(
        [lineage.lake(ns, tables.FEATURES, ds), lineage.model_version(ns, model.name, model.version)],
        [lineage.lake(ns, table, ds, result.get("version"))],
    )
    return result


@task.pyspark(**SPARK_TASK)
def score_champion(models: dict, ds: str | None = None, spark: Any = None) -> dict:
    """Score the day's features with the pinned champion into a new committed ``scores`` partition."""
    return _score(models, "champion", ds, spark)


@task.pyspark(**SPARK_TASK)
def score_challenger(models: dict, ds: str | None = None, spark: Any = None) -> dict:
    """Shadow-score the day with the pinned challenger (skipped when there is none)."""
    if not models.get("challenger"):
        raise AirflowSkipException("no challenger in the registry (or shadow scoring is off): nothing to compare")
    return _score(models, "challenger", ds, spark)


def _load(scored: dict, role: str, ds: str, run_id: str) -> dict:
    import logging

    from loopline import lake as tables
    from loopline.config import resolve_uri
    from loopline.lake import Lake
    from loopline.score_load import ScoringRun, load_day
    from loopline.thresholds import check_alert_rate

    cfg = get_config()
    rows = Lake(resolve_uri(cfg.storage.lake_uri)).arrow_dataset(scored["uri"]).to_table()
    model = scored["model"]
    decision = scored.get("decision")
    check = check_alert_rate(rows.num_rows, int(scored["flagged"]), decision)
    if check.out_of_band:
        logging.getLogger(__name__).warning(
            "ALERT %s v%s ds=%s (%s): %s", model["name"], model["version"], ds, role, check.message
        )
    run = ScoringRun(
        ds=dt.date.fromisoformat(ds),
        role=role,
        model_name=model["name"],
        model_version=model["version"],
        model_run_id=model["run_id"],
        threshold=scored.get("threshold", cfg.scoring.threshold),
        rows_flagged=scored["flagged"],
        rows_explained=scored["explained"],
        score_seconds=scored["seconds"],
        lake_uri=scored["uri"],
        airflow_run_id=run_id,
        threshold_policy=(decision or {}).get("policy"),
        expected_alert_rate=check.expected_alert_rate,
        alert_band_low=check.band_low,
        alert_band_high=check.band_high,
        alert_out_of_band=check.out_of_band if check.band_low is not None else None,
        alert_note=check.message,
    )
    with predictions_db(cfg) as conn:
        result = load_day(conn, cfg.postgres.schema_, run, rows)
    logging.getLogger(__name__).info(
        "%s ds=%s: replaced %d rows with %d in %.2f s",
        result["table"],
        ds,
        result["deleted"],
        result["loaded"],
        result["load_seconds"],
    )
    ns = namespace()
    report_lineage(
        [lineage.lake(ns, tables.SCORES if role == "champion" else tables.SCORES_SHADOW, ds, scored.get("version"))],
        [lineage.analyst(ns, result["table"].split(".")[-1], ds), lineage.analyst(ns, "scoring_runs", ds)],
    )
    return result


@task(outlets=[SCORES_ASSET])
def load_scores(scored: dict, ds: str | None = None, run_id: str | None = None, outlet_events: Any = None) -> dict:
    """Replace the day in ``transaction_scores`` (one transaction, COPY) and record it in ``scoring_runs``."""
    result = _load(scored, "champion", ds, run_id)
    outlet_events[SCORES_ASSET].extra = {
        "ds": ds,
        "rows": result["loaded"],
        "model_version": scored["model"]["version"],
    }
    return result


@task
def load_shadow_scores(scored: dict, ds: str | None = None, run_id: str | None = None) -> dict:
    """Replace the day in ``transaction_scores_shadow`` with the challenger's scores."""
    return _load(scored, "challenger", ds, run_id)
