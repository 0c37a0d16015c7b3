"""The model-health page: the loop over time, read from the analyst tables and drawn with plotly.

What it shows, each from the analyst relations (``loopline.db.ANALYST_RELATIONS``), read as the analyst role,
so the page holds no copy of the data:

- realized ROC AUC and precision at the threshold per scored day, with the model's holdout ROC AUC
  (``model_performance``);
- the same per slice of the gate (``model_performance_slices``, where slices are configured);
- drift statistics per feature over time with the nights that triggered retraining marked (``drift_reports``,
  ``drift_runs``, ``retraining_decisions``);
- daily ingest volumes and quarantine rates: rows read, published and quarantined per day (``ingest_runs``);
- daily volumes and flag rates against the alert policy's band (``daily_alerts``);
- the score distribution of recent days (``transaction_scores``);
- the champion history, promotions and rollbacks marked (``model_alias_history``);
- the shadow's evidence: its ROC AUC difference from the champion with the paired interval per compared day
  (``shadow_evaluations``), the retrainings scheduled at label maturity (``scheduled_retrainings``) and the
  promotion requests waiting for approval (``promotion_requests``).

:func:`gather` reads it all (one connection, read-only queries), :func:`render` turns it into one HTML page
whose charts use the plotly.js bundled with the ``plotly`` package (:func:`plotly_js`), served next to the
page: nothing is fetched from the internet. Nothing here knows Airflow; the plugin serves it.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass, field
from typing import Any

HEALTH_PREFIX = "/loopline/health"
PLOTLY_JS = "plotly.min.js"
SCORE_BUCKETS = 20
DAY_MS = 86_400_000  # one day on a plotly date axis
DAILY_TICKS_UP_TO = 31  # days on a chart up to which every day gets its tick
DRIFT_TESTS_SHOWN = 12  # the drift chart's lines: the tests that drifted, then the largest statistics


@dataclass(frozen=True)
class HealthData:
    """Everything the page draws, as rows (dicts) per section, oldest first."""

    schema: str
    performance: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    nights: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    ingest: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    champions: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        sections = (self.performance, self.drift, self.ingest, self.volumes, self.scores, self.champions)
        return not any((*sections, self.evidence, self.pending, self.requests))


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _rows(conn: Any, schema: str, template: str, args: tuple = ()) -> list[dict[str, Any]]:
    """Run ``template`` with ``{s}`` replaced by the (validated) schema; the rows as dicts."""
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"{schema!r} is not a plain lower-case SQL identifier")
    with conn.cursor() as cur:
        cur.execute(template.replace("{s}", schema), args)
        names = [getattr(column, "name", None) or column[0] for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def performance(conn: Any, schema: str, since: dt.date) -> list[dict[str, Any]]:
    """Realized metrics of each scored day once its labels matured, with the holdout ROC AUC of its model."""
    return _rows(
        conn,
        schema,
        "SELECT ds, model_version, roc_auc, precision_at_threshold, recall_at_threshold, reference_roc_auc, "
        "threshold, rows, positives, performance_drop FROM {s}.model_performance WHERE ds >= %s "
        "ORDER BY ds, model_version",
        (since,),
    )


def slices(conn: Any, schema: str, since: dt.date) -> list[dict[str, Any]]:
    """Realized ROC AUC and recall per slice and group (supported groups only: enough frauds to mean anything)."""
    return _rows(
        conn,
        schema,
        "SELECT ds, model_version, slice, grp, roc_auc, recall_at_threshold, positives, rows "
        "FROM {s}.model_performance_slices WHERE ds >= %s AND supported ORDER BY ds, slice, grp",
        (since,),
    )


def drift(conn: Any, schema: str, since: dt.date) -> list[dict[str, Any]]:
    """Each night's per-feature test statistics (KS / chi-squared; the multivariate and score tests too)."""
    return _rows(
        conn,
        schema,
        "SELECT ds, feature, test, statistic, p_value, drifted, model_version FROM {s}.drift_reports "
        "WHERE ds >= %s ORDER BY ds, feature",
        (since,),
    )


def nights(conn: Any, schema: str, since: dt.date) -> list[dict[str, Any]]:
    """Each monitored night: drift or not, and whether it triggered retraining (and why not, when it did not)."""
    return _rows(
        conn,
        schema,
        "SELECT r.ds, r.drift, r.signals, r.drifted_features, r.model_version, "
        "coalesce(d.triggered, false) AS triggered, d.reason "
        "FROM {s}.drift_runs r LEFT JOIN {s}.retraining_decisions d ON d.ds = r.ds "
        "WHERE r.ds >= %s ORDER BY r.ds",
        (since,),
    )


def volumes(conn: Any, schema: str, since: dt.date) -> list[dict[str, Any]]:
    """Rows scored and flagged per day (champion), the flag rate and the alert policy's band."""
    return _rows(
        conn,
        schema,
        "SELECT ds, model_version, rows_scored, rows_flagged, alert_rate, alert_band_low, alert_band_high, "
        "alert_out_of_band, realized_precision FROM {s}.daily_alerts WHERE ds >= %s ORDER BY ds",
        (since,),
    )


def ingest(conn: Any, schema: str, since: dt.date) -> list[dict[str, Any]]:
    """Transactions read, published and quarantined per ingested day, and the quarantine rate."""
    return _rows(
        conn,
        schema,
        "SELECT ds, rows_read, rows_published, duplicates_dropped, rows_quarantined, quarantine_rate, "
        "quarantined_by_reason, published_by FROM {s}.ingest_runs WHERE ds >= %s ORDER BY ds",
        (since,),
    )


def score_distribution(conn: Any, schema: str, days: int = 14, buckets: int = SCORE_BUCKETS) -> list[dict[str, Any]]:
    """Share of each day's transactions per score bucket (``buckets`` equal buckets of [0, 1]), last ``days``."""
    return _rows(
        conn,
        schema,
        "WITH recent AS (SELECT DISTINCT ds FROM {s}.transaction_scores ORDER BY ds DESC LIMIT %s) "
        "SELECT s.ds, least(width_bucket(s.score, 0, 1, %s), %s) AS bucket, count(*) AS n, "
        "count(*)::float / sum(count(*)) OVER (PARTITION BY s.ds) AS share "
        "FROM {s}.transaction_scores s JOIN recent USING (ds) GROUP BY 1, 2 ORDER BY 1, 2",
        (days, buckets, buckets),
    )


def champions(conn: Any, schema: str) -> list[dict[str, Any]]:
    """Every applied move of the ``champion`` alias, labelled promotion, rollback or first champion."""
    rows = _rows(
        conn,
        schema,
        "SELECT moved_at, version, previous_version, triggered_by, reason, decision FROM {s}.model_alias_history "
        "WHERE alias = 'champion' AND state = 'applied' ORDER BY moved_at, id",
    )
    for row in rows:
        rollback = str(row["triggered_by"]).startswith("rollback") or str(row["decision"]).startswith("rollback")
        row["kind"] = "rollback" if rollback else ("first" if row["previous_version"] is None else "promotion")
    return rows


def evidence(conn: Any, schema: str, since: dt.date) -> list[dict[str, Any]]:
    """The shadow's paired evidence per compared day (all rows, ``shadow_evaluations`` slice ``all``)."""
    return _rows(
        conn,
        schema,
        "SELECT ds, shadow_version, champion_version, rows, positives, difference, ci_low, ci_high "
        "FROM {s}.shadow_evaluations WHERE slice = 'all' AND ds >= %s ORDER BY shadow_version, ds",
        (since,),
    )


def pending(conn: Any, schema: str) -> list[dict[str, Any]]:
    """Retrainings a pattern drift scheduled that have not fired yet (``scheduled_retrainings``)."""
    return _rows(
        conn,
        schema,
        "SELECT model_name, drift_ds, due_on, reason FROM {s}.scheduled_retrainings WHERE state = 'pending' "
        "ORDER BY due_on, drift_ds",
    )


def requests(conn: Any, schema: str) -> list[dict[str, Any]]:
    """Promotion requests waiting for a person's answer (``promotion_requests`` still open)."""
    return _rows(
        conn,
        schema,
        "SELECT id, model_name, version, champion_version, requested_on FROM {s}.promotion_requests "
        "WHERE state = 'open' ORDER BY id",
    )


def latest_day(conn: Any, schema: str) -> dt.date | None:
    """The newest ``ds`` scored, monitored or measured (None when nothing is recorded yet)."""
    rows = _rows(
        conn,
        schema,
        "SELECT max(ds) AS ds FROM (SELECT max(ds) AS ds FROM {s}.scoring_runs UNION ALL "
        "SELECT max(ds) FROM {s}.drift_runs UNION ALL SELECT max(ds) FROM {s}.model_performance UNION ALL "
        "SELECT max(ds) FROM {s}.ingest_runs) AS days",
    )
    return rows[0]["ds"] if rows else None


def gather(conn: Any, schema: str, *, days: int = 90, today: dt.date | None = None) -> HealthData:
    """Read every section of the page for the ``days`` days up to ``today`` (by ``ds``); without ``today``, up
    to the newest day recorded, so a replayed or backfilled history shows as well as last night."""
    end = today or latest_day(conn, schema) or dt.date.today()
    since = end - dt.timedelta(days=days)
    return HealthData(
        schema=schema,
        performance=performance(conn, schema, since),
        slices=slices(conn, schema, since),
        drift=drift(conn, schema, since),
        nights=nights(conn, schema, since),
        volumes=volumes(conn, schema, since),
        ingest=ingest(conn, schema, since),
        scores=score_distribution(conn, schema),
        champions=champions(conn, schema),
        evidence=evidence(conn, schema, since),
        pending=pending(conn, schema),
        requests=requests(conn, schema),
    )


# ---------------------------------------------------------------------------------------------------------
# Rendering


def plotly_js() -> str:
    """The plotly.js bundle shipped inside the ``plotly`` package (served beside the page, never a CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _layout(fig: Any, title: str, yaxis: str, *, day_axis: bool = True) -> Any:
    if day_axis:  # one tick label per day, not hours of a single-day range
        days = {str(x)[:10] for trace in fig.data for x in (getattr(trace, "x", None) or ())}
        # A short span gets a tick per day (plotly would tick every 12 hours, each day labelled twice).
        fig.update_xaxes(tickformat="%Y-%m-%d", **({"dtick": DAY_MS} if len(days) <= DAILY_TICKS_UP_TO else {}))
    fig.update_layout(
        title=title,
        yaxis_title=yaxis,
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return fig


def _mark_days(fig: Any, days: list[Any], color: str) -> None:
    for day in days:
        fig.add_vline(x=str(day), line_dash="dot", line_color=color)


def performance_figure(data: HealthData) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    rows = data.performance
    x = [str(r["ds"]) for r in rows]
    fig.add_trace(go.Scatter(x=x, y=[r["roc_auc"] for r in rows], mode="lines+markers", name="realized ROC AUC"))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[r["precision_at_threshold"] for r in rows],
            mode="lines+markers",
            name="precision at the threshold",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[r["reference_roc_auc"] for r in rows],
            mode="lines",
            line={"dash": "dash"},
            name="holdout ROC AUC (the model's own)",
        )
    )
    _mark_days(fig, [c["moved_at"].date() for c in data.champions if c["kind"] != "first"], "green")
    return _layout(fig, "Realized performance per scored day (labels matured)", "metric")


def slice_figure(data: HealthData) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in data.slices:
        groups.setdefault(f"{row['slice']}={row['grp']}", []).append(row)
    for name, rows in sorted(groups.items()):
        fig.add_trace(
            go.Scatter(x=[str(r["ds"]) for r in rows], y=[r["roc_auc"] for r in rows], mode="lines+markers", name=name)
        )
    return _layout(fig, "Realized ROC AUC per slice (groups with enough frauds)", "ROC AUC")


def drift_figure(data: HealthData) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    features: dict[str, list[dict[str, Any]]] = {}
    for row in data.drift:
        if row["statistic"] is not None:
            features.setdefault(f"{row['feature']} ({row['test']})", []).append(row)
    # The tests that moved most (drifted ones first): a chart of every feature would hide them.
    ranked = sorted(
        features.items(),
        key=lambda item: (not any(r["drifted"] for r in item[1]), -max(r["statistic"] for r in item[1])),
    )
    for name, rows in sorted(ranked[:DRIFT_TESTS_SHOWN]):
        fig.add_trace(
            go.Scatter(
                x=[str(r["ds"]) for r in rows],
                y=[r["statistic"] for r in rows],
                mode="lines+markers",
                name=name,
                marker={"symbol": ["x" if r["drifted"] else "circle" for r in rows]},
            )
        )
    triggered = [n for n in data.nights if n["triggered"]]
    drifted = [n for n in data.nights if n["drift"] and not n["triggered"]]
    top = max([r["statistic"] for rows in features.values() for r in rows] or [1.0])
    for label, chosen, color in (
        ("retraining triggered", triggered, "red"),
        ("drift, not triggered (cooldown / running)", drifted, "orange"),
    ):
        if chosen:
            fig.add_trace(
                go.Scatter(
                    x=[str(n["ds"]) for n in chosen],
                    y=[top * 1.05] * len(chosen),
                    mode="markers",
                    marker={"symbol": "triangle-down", "size": 14, "color": color},
                    name=label,
                    text=[(n["reason"] or "")[:200] for n in chosen],
                )
            )
            _mark_days(fig, [n["ds"] for n in chosen], color)
    return _layout(
        fig,
        f"Drift statistic per test and night (x: drifted; the {DRIFT_TESTS_SHOWN} that moved most)",
        "test statistic",
    )


def volume_figure(data: HealthData) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = data.volumes
    x = [str(r["ds"]) for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=x, y=[r["rows_scored"] for r in rows], name="transactions scored"), secondary_y=False)
    fig.add_trace(
        go.Scatter(x=x, y=[r["alert_rate"] for r in rows], mode="lines+markers", name="flag rate"), secondary_y=True
    )
    for key, label in (("alert_band_low", "band low"), ("alert_band_high", "band high")):
        if any(r[key] is not None for r in rows):
            fig.add_trace(
                go.Scatter(x=x, y=[r[key] for r in rows], mode="lines", line={"dash": "dot"}, name=label),
                secondary_y=True,
            )
    fig.update_yaxes(title_text="rate", secondary_y=True)
    return _layout(fig, "Daily volume and flag rate (champion)", "transactions")


def ingest_figure(data: HealthData) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = data.ingest
    x = [str(r["ds"]) for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=x, y=[r["rows_published"] for r in rows], name="published"), secondary_y=False)
    fig.add_trace(
        go.Bar(
            x=x,
            y=[r["rows_quarantined"] for r in rows],
            name="quarantined",
            text=[", ".join(f"{k}: {v}" for k, v in sorted((r["quarantined_by_reason"] or {}).items())) for r in rows],
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(x=x, y=[r["quarantine_rate"] for r in rows], mode="lines+markers", name="quarantine rate"),
        secondary_y=True,
    )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="quarantine rate", secondary_y=True)
    return _layout(fig, "Daily ingest: transactions published and quarantined, quarantine rate", "transactions")


def score_figure(data: HealthData) -> Any:
    import plotly.graph_objects as go

    days = sorted({str(r["ds"]) for r in data.scores})
    share = {(str(r["ds"]), int(r["bucket"])): float(r["share"]) for r in data.scores}
    edges = [f"{(b - 1) / SCORE_BUCKETS:.2f}-{b / SCORE_BUCKETS:.2f}" for b in range(1, SCORE_BUCKETS + 1)]
    z = [[share.get((day, b), 0.0) for day in days] for b in range(1, SCORE_BUCKETS + 1)]
    fig = go.Figure(go.Heatmap(x=days, y=edges, z=z, colorscale="Viridis", colorbar={"title": "share"}))
    return _layout(fig, "Score distribution per day (share of transactions per score bucket)", "score")


def champion_figure(data: HealthData) -> Any:
    import plotly.graph_objects as go

    rows = data.champions
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[r["moved_at"].isoformat() for r in rows],
            y=[r["version"] for r in rows],
            mode="lines",
            line={"shape": "hv"},
            name="champion version",
        )
    )
    for kind, symbol, color in (
        ("first", "circle", "blue"),
        ("promotion", "triangle-up", "green"),
        ("rollback", "triangle-down", "red"),
    ):
        chosen = [r for r in rows if r["kind"] == kind]
        if chosen:
            fig.add_trace(
                go.Scatter(
                    x=[r["moved_at"].isoformat() for r in chosen],
                    y=[r["version"] for r in chosen],
                    mode="markers",
                    marker={"symbol": symbol, "size": 13, "color": color},
                    name=kind,
                    text=[f"{r['decision']} ({r['triggered_by']})"[:200] for r in chosen],
                )
            )
    return _layout(fig, "Champion history (promotions and rollbacks)", "model version", day_axis=False)


def evidence_figure(data: HealthData) -> Any:
    """Per shadow version: its ROC AUC minus the champion's on each compared day, with the paired interval."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for version in sorted({r["shadow_version"] for r in data.evidence}):
        rows = [r for r in data.evidence if r["shadow_version"] == version]
        diff = [_float(r["difference"]) for r in rows]
        fig.add_trace(
            go.Scatter(
                x=[r["ds"].isoformat() for r in rows],
                y=diff,
                mode="markers",
                name=f"shadow v{version} - champion",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [_float(r["ci_high"]) - d for r, d in zip(rows, diff, strict=True)],
                    "arrayminus": [d - _float(r["ci_low"]) for r, d in zip(rows, diff, strict=True)],
                },
                text=[
                    f"vs champion v{r['champion_version']}: {r['rows']} paired rows, {r['positives']} frauds"
                    for r in rows
                ],
            )
        )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    return _layout(fig, "Shadow vs champion on matured labels (ROC AUC difference, interval)", "difference")


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _champion(version: Any) -> str:
    return "no champion" if version is None else f"champion v{version}"


def _waiting(data: HealthData) -> str:
    """The pending retrainings and open promotion requests, as short lists under the evidence chart."""
    items = [
        f"<li>retraining of {html.escape(r['model_name'])} scheduled for {r['due_on']} (pattern drift of "
        f"{r['drift_ds']}: its labels mature then)</li>"
        for r in data.pending
    ]
    items += [
        f"<li>promotion request #{r['id']}: {html.escape(r['model_name'])} v{r['version']} over "
        f"{_champion(r['champion_version'])}, raised {r['requested_on']}, waiting for approval (promote_model)</li>"
        for r in data.requests
    ]
    if not items:
        return '<p class="empty" id="waiting">No scheduled retraining or promotion request is waiting.</p>'
    return f'<ul id="waiting">{"".join(items)}</ul>'


SECTIONS = (
    ("performance", "Realized performance", performance_figure, "performance"),
    ("slices", "Per-slice performance", slice_figure, "slices"),
    ("drift", "Drift", drift_figure, "drift"),
    ("ingest", "Ingest volumes and quarantine", ingest_figure, "ingest"),
    ("volumes", "Volumes and flag rates", volume_figure, "volumes"),
    ("scores", "Score distribution", score_figure, "scores"),
    ("champions", "Champion history", champion_figure, "champions"),
    ("promotion", "Promotion on evidence", evidence_figure, "evidence"),
)

_EMPTY = {
    "performance": "No realized performance yet: labels mature features.label_maturity_days after a scored day.",
    "slices": "No slice with enough frauds yet (gate.slices), or no slices configured.",
    "drift": "No drift_monitor night recorded yet.",
    "ingest": "No ingested day recorded yet (feature_pipeline.record_ingest, backfill_range).",
    "volumes": "No scored day yet (batch_score).",
    "scores": "No scores yet (batch_score).",
    "champions": "No champion yet (train_model and its gate).",
    "promotion": "No shadow compared yet (promotion.policy shadow_first, drift_monitor's compare_shadow).",
}


def render(data: HealthData, *, plotly_src: str = f"{HEALTH_PREFIX}/{PLOTLY_JS}", title: str = "Model health") -> str:
    """The page: one chart per section (or a note saying why it is empty), plotly.js loaded from ``plotly_src``."""
    parts = []
    for key, heading, figure, attr in SECTIONS:
        rows = getattr(data, attr)
        parts.append(f'<section id="{key}"><h2>{html.escape(heading)}</h2>')
        if rows:
            chart = figure(data).to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{key}")
            parts.append(f'<div class="chart">{chart}</div>')
        else:
            parts.append(f'<p class="empty">{html.escape(_EMPTY[key])}</p>')
        if key == "promotion":
            parts.append(_waiting(data))
        parts.append("</section>")
    triggered = [str(n["ds"]) for n in data.nights if n["triggered"]]
    summary = (
        f"{len(data.ingest)} ingested day(s), {len(data.volumes)} scored day(s), "
        f"{len(data.nights)} monitored night(s), retraining triggered on "
        f"{', '.join(triggered) or 'no night'}, {len(data.champions)} champion move(s), "
        f"{len(data.pending)} retraining(s) scheduled, {len(data.requests)} promotion request(s) open"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><script src='{html.escape(plotly_src)}'></script>"
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1300px}section{margin-bottom:1.5em}"
        ".empty{color:#666}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p id='summary'>{html.escape(summary)} (schema "
        f"<code>{html.escape(data.schema)}</code>, read as the analyst role).</p>" + "".join(parts) + "</body></html>"
    )
