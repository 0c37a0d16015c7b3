"""Tasks of the ``drift_monitor`` DAG: detect drift, measure matured performance, decide.

The logic is in :mod:`loopline.monitoring` and :mod:`loopline.drift`; these wrappers only fetch
connections, turn a missing input into a skip with its message, and hand results over XCom.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from loopline.config import get_config
from loopline.orchestration import links, reports
from loopline.orchestration.database import predictions_db

TRAIN_DAG_ID = "train_model"
TRIGGER_TASK_ID = "trigger_training"
SKIP_TASK_ID = "skip_retraining"
DECIDE_TASK_ID = "decide_retraining"
CONFIRM_TASK_ID = "confirm_trigger"
log = logging.getLogger(__name__)


def _client():
    from loopline.orchestration.mlflow_access import mlflow_client

    return mlflow_client()


def train_run_id(ds: str) -> str:
    """The run id of the training a night triggers: fixed per night, so a rerun cannot start a second one."""
    return f"drift_monitor__{ds}"


@task
def detect_drift(ds: str | None = None, run_id: str | None = None) -> dict:
    """Test the day's features and scores against the scoring model's reference; report to MLflow and Postgres."""
    from loopline import monitoring
    from loopline.config import resolve_uri
    from loopline.training.tracking import ensure_experiment

    cfg = get_config()
    day = dt.date.fromisoformat(ds)
    try:
        scored = monitoring.day_frame(resolve_uri(cfg.storage.lake_uri), day)
        client = _client()
        with monitoring.workdir() as tmp, reports.report_space(cfg) as space:
            work = Path(tmp)
            detector, built = monitoring.cached_detector(client, scored.model_run_id, cfg.drift, work)
            reference = monitoring.reference_frame(client, scored.model_run_id, work)
            lake_root = resolve_uri(cfg.storage.lake_uri)
            result = detector.test(scored.frame, warming=monitoring.warming(cfg, lake_root, reference))
            title = f"Drift {ds}: {scored.model_name} v{scored.model_version} ({result.backend})"
            report_dir = space.root / "drift" / f"ds={ds}"  # a scratch folder when reports_uri is object storage
            rendered = monitoring.render_report(
                result, reference, scored.frame, report_dir, title=title, top=cfg.drift.report_features
            )
            space.publish(report_dir)  # only this night's folder; nothing when reports_uri is local
            report = space.stored_uri(rendered)
            experiment_id = ensure_experiment(
                cfg.drift.experiment, client.tracking_uri, resolve_uri(cfg.mlflow.artifact_uri)
            )
            mlflow_run_id = monitoring.log_report(client, experiment_id, day, report_dir, scored, result)
    except monitoring.MissingInput as exc:
        raise AirflowSkipException(f"drift not measured for ds={ds}: {exc}") from exc
    with predictions_db() as conn:
        written = monitoring.write_drift(
            conn,
            cfg.postgres.schema_,
            scored,
            result,
            report_uri=report,
            mlflow_run_id=mlflow_run_id,
            airflow_run_id=run_id,
        )
    run_url = f"{cfg.mlflow.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{mlflow_run_id}"
    links.record(links.MLFLOW_KEY, run_url)
    links.record(links.REPORT_KEY, links.report_url(report))
    log.info(
        "ds=%s v%s: %s (detector %s); %d tests -> %s.drift_reports; report %s; MLflow run %s",
        ds,
        scored.model_version,
        result.summary(),
        "fitted and cached now" if built else "from the model's cache",
        written,
        cfg.postgres.schema_,
        report,
        run_url,
    )
    from loopline import lake as tables
    from loopline import lineage
    from loopline.orchestration.lineage import namespace, report_lineage

    ns = namespace()
    report_lineage(
        [
            lineage.lake(ns, tables.FEATURES, ds),
            lineage.lake(ns, tables.SCORES, ds),
            lineage.model_version(ns, scored.model_name, scored.model_version),
        ],
        [
            lineage.analyst(ns, "drift_reports", ds),
            lineage.analyst(ns, "drift_runs", ds),
            lineage.mlflow_run(ns, mlflow_run_id),  # the night's report in the drift experiment
        ],
    )
    return {
        "ds": ds,
        "drift": result.drift,
        "summary": result.summary(),
        "drifted_features": list(result.drifted_features),
        "drifted_segments": list(result.drifted_segments),
        "signals": result.signals,
        "model_name": scored.model_name,
        "model_version": scored.model_version,
        "model_run_id": scored.model_run_id,
        "report_uri": report,
        "mlflow_run_id": mlflow_run_id,
        "mlflow_run_url": run_url,
        "result": result.to_dict(),
    }


@task
def measure_performance(ds: str | None = None, run_id: str | None = None) -> dict:
    """Realized metrics of the day whose labels matured tonight (``ds - label_maturity_days``)."""
    from loopline import monitoring
    from loopline.config import resolve_uri
    from loopline.drift import performance_drop, realized_performance

    cfg = get_config()
    asof = dt.date.fromisoformat(ds)
    scored_day = asof - dt.timedelta(days=cfg.features.label_maturity_days)
    found = monitoring.realized_day(resolve_uri(cfg.storage.lake_uri), scored_day, asof)
    if found is None:
        raise AirflowSkipException(
            f"no scores for ds={scored_day} (the day whose labels matured tonight, "
            f"{cfg.features.label_maturity_days} days back): nothing to measure yet"
        )
    rows, facts = found
    metrics = realized_performance(rows["is_fraud"], rows["score"], facts["threshold"])
    run = _client().get_run(facts["model_run_id"])
    reference_auc = run.data.metrics.get("holdout_roc_auc")
    note = metrics["auc_unavailable_reason"]
    dropped = performance_drop(metrics, reference_auc, cfg.drift.performance_tolerance)
    if dropped and metrics["positives"] < cfg.drift.performance_min_positives:
        # AUC over a handful of frauds swings by more than the tolerance on its own: no alarm on noise.
        dropped = False
        note = (
            f"ROC AUC {metrics['roc_auc']:.3f} is below the holdout's {reference_auc:.3f} by more than the "
            f"tolerance, but with {metrics['positives']} labelled fraud(s) (< drift.performance_min_positives "
            f"{cfg.drift.performance_min_positives}) that is not evidence of a drop"
        )
    row = {
        **facts,
        **{key: metrics[key] for key in ("rows", "positives", "flagged", "threshold")},
        **{
            key: metrics[key] for key in ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold", "brier")
        },
        "reference_roc_auc": reference_auc,
        "performance_drop": dropped,
        "note": note,
        "airflow_run_id": run_id,
    }
    # The gate's slices over time, on the same matured labels (for analysts: model_performance_slices).
    sliced = monitoring.realized_slices(resolve_uri(cfg.storage.lake_uri), scored_day, asof, cfg.gate.slices)
    with predictions_db() as conn:
        monitoring.write_performance(conn, cfg.postgres.schema_, row)
        if sliced is not None:
            monitoring.write_performance_slices(conn, cfg.postgres.schema_, facts, sliced)
    log.info(
        "ds=%s (labels up to %s): v%s ROC AUC %s vs holdout %s, %d labelled rows (%d unlabelled), drop: %s",
        scored_day,
        asof,
        facts["model_version"],
        metrics["roc_auc"],
        reference_auc,
        metrics["rows"],
        facts["unlabelled_rows"],
        dropped,
    )
    from loopline import lake as tables
    from loopline import lineage
    from loopline.orchestration.lineage import namespace, report_lineage

    ns = namespace()
    outputs = [lineage.analyst(ns, "model_performance", scored_day)]
    if sliced is not None:
        outputs.append(lineage.analyst(ns, "model_performance_slices", scored_day))
    report_lineage(
        [lineage.lake(ns, tables.SCORES, scored_day), lineage.lake(ns, tables.LABELED_TRANSACTIONS, asof)], outputs
    )
    return {key: (value.isoformat() if isinstance(value, dt.date) else value) for key, value in row.items()}


@task.branch(trigger_rule="none_failed")
def decide_retraining(
    drift: dict | None,
    performance: dict | None,
    ds: str | None = None,
    run_id: str | None = None,
    ti: Any = None,
    params: dict | None = None,
) -> str:
    """Trigger ``train_model`` on drift or a performance drop, unless cooling down or training already runs.

    The trigger form's ``dry_run`` records the decision without ever triggering; ``cooldown_hours`` overrides
    ``drift.cooldown_hours`` for this run.
    """
    from loopline import monitoring
    from loopline.drift import DriftResult, DriftTest
    from loopline.orchestration.forms import param

    cfg = get_config()
    day = dt.date.fromisoformat(ds)
    result = None
    if drift:
        raw = dict(drift["result"])
        raw.pop("summary", None)
        raw["tests"] = tuple(DriftTest(**row) for row in raw["tests"])
        raw["drifted_features"] = tuple(raw["drifted_features"])
        raw["drifted_segments"] = tuple(raw.get("drifted_segments", ()))
        result = DriftResult(**raw)
    model_version = drift["model_version"] if drift else None
    # A drop of a model that no longer scores is no reason to retrain the one that does.
    dropped = bool(
        performance
        and performance.get("performance_drop")
        and (model_version is None or performance.get("model_version") == model_version)
    )
    active = ti.get_dr_count(dag_id=TRAIN_DAG_ID, states=["queued", "running"]) > 0
    target = train_run_id(ds)
    # An earlier try whose trigger worked but whose confirmation did not: confirmed now, not triggered again.
    exists = ti.get_dr_count(dag_id=TRAIN_DAG_ID, run_ids=[target]) > 0
    with predictions_db() as conn:
        decision, already = monitoring.decide_and_record(  # already: confirmed earlier
            conn,
            cfg.postgres.schema_,
            ds=day,
            model_name=cfg.mlflow.registered_model,
            model_version=model_version,
            result=result,
            performance_drop=dropped,
            cooldown_hours=param(params, "cooldown_hours", cfg.drift.cooldown_hours),
            training_active=active,
            train_run_id=target,
            airflow_run_id=run_id,
            triggered_run_exists=exists,
            dry_run=bool(param(params, "dry_run", False)),
            label_maturity_days=(cfg.features.label_maturity_days if cfg.promotion.retrain_at_label_maturity else None),
        )
    target = target if decision.trigger else None
    scheduled_for = None
    if decision.schedule:
        scheduled_for = (day + dt.timedelta(days=cfg.features.label_maturity_days)).isoformat()
    ti.xcom_push(
        key="decision",
        value=monitoring.decision_dict(decision, train_run_id=target, ds=ds, scheduled_for=scheduled_for),
    )
    from loopline import lineage
    from loopline.orchestration.lineage import namespace, report_lineage

    ns = namespace()
    read = [lineage.analyst(ns, "drift_runs", ds)] if drift else []
    if performance and performance.get("ds"):
        read.append(lineage.analyst(ns, "model_performance", performance["ds"]))
    report_lineage(read, [lineage.analyst(ns, "retraining_decisions", ds)])
    log.info(
        "ds=%s: %s%s",
        ds,
        "trigger train_model: " if decision.trigger else "",
        decision.reason + (" (kept)" if already else ""),
    )
    return TRIGGER_TASK_ID if decision.trigger else SKIP_TASK_ID


@task(task_id=CONFIRM_TASK_ID, trigger_rule="all_done")
def confirm_trigger(ds: str | None = None, ti: Any = None) -> str | None:
    """Mark the night's pending trigger confirmed once the ``train_model`` run exists; else leave it pending.

    Runs whatever the trigger task did (``all_done``): skipped when the night did not decide to trigger; when
    the trigger failed and no run exists, fails with the row left ``pending``, so a rerun of the night
    triggers again. A trigger skipped because the run already existed (a rerun) is confirmed too.
    """
    from loopline import monitoring

    decision = ti.xcom_pull(task_ids=DECIDE_TASK_ID, key="decision")
    if not decision or not decision.get("trigger"):
        raise AirflowSkipException(f"ds={ds}: no trigger decided, nothing to confirm")
    pushed = ti.xcom_pull(task_ids=TRIGGER_TASK_ID, key="trigger_run_id")
    target = pushed or decision.get("train_run_id") or train_run_id(ds)
    cfg = get_config()
    if ti.get_dr_count(dag_id=TRAIN_DAG_ID, run_ids=[target]) == 0:
        raise AirflowFailException(
            f"ds={ds}: no {TRAIN_DAG_ID} run {target} exists (the trigger failed); the decision stays pending in "
            f"{cfg.postgres.schema_}.retraining_decisions and a rerun of this night triggers again"
        )
    with predictions_db() as conn:
        confirmed = monitoring.confirm_trigger(
            conn, cfg.postgres.schema_, ds=dt.date.fromisoformat(ds), triggered_run_id=target
        )
    if not confirmed:
        raise AirflowFailException(f"ds={ds}: {target} exists but the night has no pending trigger to confirm")
    log.info("ds=%s: %s run %s exists; trigger confirmed", ds, TRAIN_DAG_ID, target)
    return target


def trigger_conf() -> dict[str, str]:
    """``train_model``'s conf (rendered per run): its Params take the reason and the cut-off from here."""
    decision = f"ti.xcom_pull(task_ids='{DECIDE_TASK_ID}', key='decision')"
    return {
        # train_model's reason Param holds at most 500 characters; the full reason stays in retraining_decisions
        "reason": "drift_monitor {{ ds }}: {{ " + decision + "['reason'][:450] }}",
        "triggered_by": "drift_monitor",
        "drifted_features": "{{ " + decision + "['drifted_features'] | join(',') }}",
        "ds": "{{ ds }}",
        "cutoff": "{{ macros.ds_add(ds, 1) }}",  # everything known once the night is over
    }
