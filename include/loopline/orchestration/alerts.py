"""Alerts: task failures, lateness (deadline alerts) and the drift/retraining decisions, through notifiers.

Where alerts go is configuration (``alerts.channels``): every alert goes to every channel. ``smtp`` sends with
the SMTP provider's ``SmtpNotifier`` and ``webhook`` with the HTTP provider's ``HttpNotifier`` (a JSON POST
with a Slack-compatible ``text``); hosts and secrets live in their Airflow connections. ``file`` (JSON lines,
the local default) and ``log`` need nothing.

Three entry points, all sending one :class:`Alert`:

- :class:`LooplineNotifier` ``(kind="failure")``: every task's ``on_failure_callback`` (shared default args),
  called once the task's retries are exhausted;
- :class:`LooplineNotifier` ``(kind="drift")``: ``drift_monitor``'s nightly verdict and retraining decision;
- :class:`LooplineNotifier` ``(kind="promotion")``: ``train_model``'s gate verdict (promoted or challenger);
- :func:`deadline_missed`: the async callback of the DAGs' deadline alerts (:func:`deadlines`), run in the
  triggerer when a day's run is not finished by its due time.

Each alert says what is broken or late, for which ``ds``, the first thing to check (the DAG's own Triage
line for the failed task, from its ``doc_md``) and links to the run. Delivering never raises: a channel that
is down is logged and counted (:data:`DELIVERY_FAILURES` and the ``loopline.alerts.delivery_failed`` metric),
and the task it reports on keeps its own state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from loopline.config import LooplineConfig, get_config, resolve_uri

log = logging.getLogger(__name__)

# Deliveries that failed in this process, per channel type (the metric counts across processes).
DELIVERY_FAILURES: Counter[str] = Counter()
GENERIC_CHECK = "the task log of the failed try, then the DAG's Triage section (DAG docs in the UI)"


@dataclass(frozen=True)
class Alert:
    """One alert, as every channel sends it."""

    kind: str  # failure | late | drift
    title: str  # one line: what is broken or late, and for which ds
    ds: str | None
    dag_id: str
    run_id: str | None
    check: str  # the first thing to check
    run_url: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        lines = [self.title, f"ds: {self.ds or 'n/a'}", f"first check: {self.check}"]
        if self.run_url:
            lines.append(f"run: {self.run_url}")
        lines += [f"{key}: {value}" for key, value in self.details.items() if key != "drift" and value is not None]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The JSON a file or webhook channel sends (``text`` is Slack-compatible)."""
        return {**asdict(self), "text": self.text, "sent_at": dt.datetime.now(dt.UTC).isoformat()}

    def as_html(self) -> str:
        return "<pre>" + html.escape(self.text, quote=False) + "</pre>"


def airflow_url(cfg: LooplineConfig | None = None) -> str:
    """The Airflow UI's base URL: ``alerts.airflow_url``, else Airflow's ``[api] base_url``."""
    cfg = cfg or get_config()
    if cfg.alerts.airflow_url:
        return cfg.alerts.airflow_url.rstrip("/")
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback=None) or "http://localhost:8080").rstrip("/")


def run_url(dag_id: str, run_id: str | None, task_id: str | None = None, cfg: LooplineConfig | None = None) -> str:
    """The UI page of a DAG run (or of one task in it)."""
    url = f"{airflow_url(cfg)}/dags/{quote(dag_id, safe='')}"
    if run_id:
        url += f"/runs/{quote(run_id, safe='')}"
        if task_id:
            url += f"/tasks/{quote(task_id, safe='')}"
    return url


def triage_hint(doc_md: str | None, task_id: str) -> str:
    """The line of a DAG's ``## Triage`` section that names ``task_id`` (in backticks), else a generic hint."""
    if not doc_md or "## Triage" not in doc_md:
        return GENERIC_CHECK
    section = doc_md.split("## Triage", 1)[1].split("\n## ", 1)[0]
    bullets: list[str] = []
    for line in section.splitlines():
        if line.startswith("- "):
            bullets.append(line[2:].strip())
        elif line.startswith("  ") and bullets:
            bullets[-1] += " " + line.strip()
    for bullet in bullets:
        if f"`{task_id}`" in bullet:
            return bullet
    return GENERIC_CHECK


def _ds(context: dict[str, Any]) -> str | None:
    if context.get("ds"):
        return str(context["ds"])
    dag_run = context.get("dag_run")
    logical = getattr(dag_run, "logical_date", None) if dag_run is not None else None
    return logical.date().isoformat() if logical else None


def failure_alert(context: dict[str, Any], cfg: LooplineConfig | None = None) -> Alert:
    """The alert for a task whose last try failed (an ``on_failure_callback`` context)."""
    ti = context["ti"]
    dag = context.get("dag")
    dag_id = ti.dag_id
    ds = _ds(context)
    exception = context.get("exception")
    tries = getattr(ti, "try_number", None)
    what = f"Loopline: {dag_id}.{ti.task_id} FAILED for ds={ds or 'n/a'}"
    return Alert(
        kind="failure",
        title=what + (f" (final try: {tries})" if tries else ""),
        ds=ds,
        dag_id=dag_id,
        run_id=ti.run_id,
        check=triage_hint(getattr(dag, "doc_md", None), ti.task_id),
        run_url=run_url(dag_id, ti.run_id, ti.task_id, cfg),
        details={"task_id": ti.task_id, "error": None if exception is None else f"{exception}"[:2000]},
    )


def drift_alert(context: dict[str, Any], cfg: LooplineConfig | None = None) -> Alert:
    """The nightly drift verdict and retraining decision (from ``detect_drift`` and ``decide_retraining``)."""
    from loopline.monitoring import notification
    from loopline.orchestration.monitoring_tasks import DECIDE_TASK_ID

    ti = context["ti"]
    ds = _ds(context) or ""
    message = notification(
        ds, ti.xcom_pull(task_ids="detect_drift"), ti.xcom_pull(task_ids=DECIDE_TASK_ID, key="decision")
    )
    title, _, rest = message["text"].partition("\n")
    verdict = "retraining TRIGGERED" if message["triggered"] else "no retraining"
    return Alert(
        kind="drift",
        title=f"{title} {verdict}",
        ds=ds,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        check=(
            "the drift report (the run's MLflow link) and loopline.retraining_decisions for the night"
            if message["drift"]
            else "nothing to do unless the decision surprises you: see decide_retraining's log"
        ),
        run_url=run_url(ti.dag_id, ti.run_id, cfg=cfg),
        details={"summary": rest.replace("\n", " | "), "drift": message},
    )


def promotion_alert(context: dict[str, Any], cfg: LooplineConfig | None = None) -> Alert:
    """The gate's verdict on a trained candidate (``gate_candidate``'s result): promoted or kept as challenger."""
    ti = context["ti"]
    cfg = cfg or get_config()
    gate = ti.xcom_pull(task_ids=ti.task_id) or {}
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    model = f"{cfg.mlflow.registered_model} v{gate.get('version')}"
    verb = "PROMOTED to champion" if gate.get("promoted") else f"kept as {gate.get('alias') or 'challenger'}"
    return Alert(
        kind="promotion",
        title=f"Loopline: {model} {verb} ({ti.dag_id} run {ti.run_id})",
        ds=conf.get("ds") or _ds(context),
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        check=(
            "tomorrow's batch_score scores with it; roll back in one step with `loopline model rollback`"
            if gate.get("promoted")
            else "nothing yet: it is scored in shadow and judged nightly on matured labels; promote_model asks for "
            "approval if it wins (docs/promotion.md)"
            if gate.get("alias") == "shadow"
            else "nothing: the champion is unchanged (the reason says why the candidate lost)"
        ),
        run_url=run_url(ti.dag_id, ti.run_id, cfg=cfg),
        details={
            "reason": gate.get("reason"),
            "triggered_by": conf.get("triggered_by"),
            "trigger_reason": conf.get("reason"),
            "metrics": gate.get("metrics"),
        },
    )


def late_alert(context: dict[str, Any], *, what: str, check: str, cfg: LooplineConfig | None = None) -> Alert:
    """A missed deadline (the simple context Airflow gives deadline callbacks: ``dag_run`` and ``deadline``)."""
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id = str(dag_run.get("dag_id", "?"))
    logical = dag_run.get("logical_date")
    ds = str(logical)[:10] if logical else None
    state = dag_run.get("state")
    return Alert(
        kind="late",
        title=f"Loopline LATE: {what} for ds={ds or 'n/a'} ({dag_id} run {state or 'not finished'})",
        ds=ds,
        dag_id=dag_id,
        run_id=dag_run.get("dag_run_id") or dag_run.get("run_id"),
        check=check,
        run_url=run_url(dag_id, dag_run.get("dag_run_id") or dag_run.get("run_id"), cfg=cfg),
        details={"deadline": deadline.get("deadline_time")},
    )


# ---------------------------------------------------------------------------------------------------------
# Channels


class FileNotifier(BaseNotifier):
    """The local channel: appends each alert as one JSON line to a file."""

    def __init__(self, path: str, payload: dict[str, Any]):
        super().__init__()
        self.path = path
        self.payload = payload

    def notify(self, context: Any) -> None:
        path = Path(resolve_uri(self.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(self.payload, default=str) + "\n")


class LogNotifier(BaseNotifier):
    """The log channel: the alert in the log of whatever process raised it."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def notify(self, context: Any) -> None:
        log.warning("%s", self.text)


def channel_notifier(channel: Any, alert: Alert) -> BaseNotifier:
    """The provider notifier that sends ``alert`` on one configured channel."""
    if channel.type == "file":
        return FileNotifier(channel.path, alert.as_json())
    if channel.type == "log":
        return LogNotifier(alert.text)
    if channel.type == "smtp":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(
            to=list(channel.to),
            from_email=channel.from_email,
            subject=alert.title,
            html_content=alert.as_html(),
            smtp_conn_id=channel.conn_id,
        )
    if channel.type == "webhook":
        from airflow.providers.http.notifications.http import HttpNotifier

        return HttpNotifier(
            http_conn_id=channel.conn_id,
            endpoint=channel.endpoint,
            json=alert.as_json(),
            headers={"Content-Type": "application/json"},
        )
    raise ValueError(f"unknown alert channel type {channel.type!r}")  # the config's union rules this out


def _count_failure(channel_type: str) -> None:
    DELIVERY_FAILURES[channel_type] += 1
    try:
        from airflow.sdk.observability.stats import Stats

        Stats.incr("loopline.alerts.delivery_failed", tags={"channel": channel_type})
    except Exception:  # metrics are best effort
        log.debug("could not count the failed delivery", exc_info=True)


def deliver(alert: Alert, context: dict[str, Any] | None = None, cfg: LooplineConfig | None = None) -> int:
    """Send ``alert`` on every configured channel; returns how many succeeded. Never raises."""
    cfg = cfg or get_config()
    sent = 0
    for channel in cfg.alerts.channels:
        try:
            channel_notifier(channel, alert).notify(context or {})
            sent += 1
        except Exception:  # a channel that is down must never fail what it reports on
            _count_failure(channel.type)
            log.exception("could not send the %s alert %r on channel %s", alert.kind, alert.title, channel.type)
    return sent


class LooplineNotifier(BaseNotifier):
    """A task callback: a failure (``kind="failure"``), the night's drift decision (``"drift"``) or the gate's
    verdict on a candidate (``"promotion"``)."""

    def __init__(self, kind: str = "failure"):
        super().__init__()
        if kind not in _BUILDERS:
            raise ValueError(f"unknown alert kind {kind!r}")
        self.kind = kind

    def notify(self, context: Any) -> None:
        try:
            cfg = get_config()
            alert = _BUILDERS[self.kind](context, cfg)
        except Exception:  # building the message must not fail the task either
            _count_failure("build")
            log.exception("could not build the %s alert", self.kind)
            return
        deliver(alert, context, cfg)


_BUILDERS = {"failure": failure_alert, "drift": drift_alert, "promotion": promotion_alert}


# ---------------------------------------------------------------------------------------------------------
# Lateness


async def deadline_missed(*, what: str, check: str, context: dict[str, Any] | None = None, **_: Any) -> int:
    """Deadline-alert callback (run in the triggerer): a day's run is not finished by its due time.

    Only scheduled runs alert: a backfilled or manually rerun day was created long after its due time, and
    its deadline is missed at birth (logged, not sent). Returns how many channels the alert reached.
    """
    context = context or {}
    run_type = (context.get("dag_run") or {}).get("run_type")
    if run_type not in (None, "scheduled"):
        log.info("deadline of a %s run missed (%s): not alerted, only scheduled runs are due", run_type, what)
        return 0
    alert = late_alert(context, what=what, check=check)
    return await asyncio.to_thread(deliver, alert, context)


LATENESS = {
    "feature_pipeline": (
        "drop_due",
        "the day's landing drop is not complete (or its features not published)",
        "the run's wait_for_drop task: which _SUCCESS marker is missing; then the upstream export for ds",
    ),
    "batch_score": (
        "scores_due",
        "the day's scores are not published to Postgres",
        "the run's wait_for_features task (feature_pipeline for ds), then score_champion / load_scores",
    ),
    "drift_monitor": (
        "drift_max_hours",
        "no drift_monitor run finished",
        "the run's wait_for_scores task (batch_score for ds), then detect_drift; is the DAG paused?",
    ),
}


def due_after_logical_date(dag_id: str, cfg: LooplineConfig | None = None) -> timedelta:
    """How long after a run's logical date (the start of ``ds``) it must be finished."""
    late = (cfg or get_config()).alerts.lateness
    key = LATENESS[dag_id][0]
    if key == "drift_max_hours":
        return timedelta(days=1, hours=late.drift_max_hours)
    return late.due_after_ds(getattr(late, key))


def deadlines(dag_id: str, cfg: LooplineConfig | None = None) -> list[Any]:
    """The deadline alerts of a daily DAG: its run for ``ds`` must be finished by the configured time.

    The reference is the run's logical date (the start of ``ds``) plus the configured due time; Airflow drops
    a run's deadline when the run finishes, and the scheduler queues the callback when it passes first.
    ``drift_monitor``'s "no run finished for N hours" is its run for ``ds`` not finished N hours after ``ds``
    ended (a paused DAG creates no run, hence no deadline: the UI shows it paused). Deadline alerts are
    experimental in Airflow 3; ``alerts.lateness.enabled: false`` leaves them out (needed for
    ``airflow dags test`` on Airflow 3.3.0, whose dag.test() breaks on a successful run with deadlines).
    """
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    if not (cfg or get_config()).alerts.lateness.enabled:
        return []
    _, what, check = LATENESS[dag_id]
    return [
        DeadlineAlert(
            reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
            interval=due_after_logical_date(dag_id, cfg),
            callback=AsyncCallback(deadline_missed, kwargs={"what": what, "check": check}),
            name=f"{dag_id}_late",
        )
    ]
