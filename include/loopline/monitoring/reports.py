"""The night's drift report: an HTML page with PNGs in one MLflow run per day, and the drift rows in Postgres
(``drift_runs`` / ``drift_reports``, the day replaced in one transaction).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.drift import DriftResult
from loopline.monitoring.inputs import ScoredDay, _check_schema
from loopline.schemas import CATEGORICAL_FEATURES


def _ranked(result: DriftResult) -> list:
    tests = [row for row in result.tests if row.test in ("ks", "chi2", "score_ks")]
    return sorted(tests, key=lambda row: (row.p_value, -row.statistic))


def render_report(
    result: DriftResult, reference: pd.DataFrame, current: pd.DataFrame, out_dir: Path, *, title: str, top: int
) -> Path:
    """``report.html`` plus ``pvalues.png`` and ``feature_<name>.png`` for the ``top`` most drifted columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = _ranked(result)

    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(ranked))))
    names = [row.feature for row in ranked][::-1]
    p_values = [max(row.p_value, 1e-300) for row in ranked][::-1]
    colours = ["#c0392b" if row.drifted else "#7f8c8d" for row in ranked][::-1]
    ax.barh(names, [-math.log10(p) for p in p_values], color=colours)
    for row in ranked[:1]:
        ax.axvline(-math.log10(row.threshold), color="#2c3e50", linestyle="--", label="corrected level")
    ax.set_xlabel("-log10(p-value)  (red: drifted)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_dir / "pvalues.png", dpi=90)
    plt.close(fig)

    images = []
    for row in ranked[:top]:
        column = row.feature
        if column not in reference.columns or column not in current.columns:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        if column in CATEGORICAL_FEATURES:
            ref = reference[column].astype(str).value_counts(normalize=True)
            cur = current[column].astype(str).value_counts(normalize=True)
            frame = pd.DataFrame({"reference": ref, "current": cur}).fillna(0.0).sort_values("reference")
            frame.plot.barh(ax=ax, color=["#7f8c8d", "#c0392b"])
        else:
            ref = pd.to_numeric(reference[column], errors="coerce").dropna().to_numpy(dtype=float)
            cur = pd.to_numeric(current[column], errors="coerce").dropna().to_numpy(dtype=float)
            both = np.concatenate([ref, cur])
            if both.size == 0:
                plt.close(fig)
                continue
            low, high = np.quantile(both, [0.005, 0.995])
            bins = np.linspace(low, high if high > low else low + 1, 40)
            ax.hist(ref, bins=bins, density=True, alpha=0.55, label="reference", color="#7f8c8d")
            ax.hist(cur, bins=bins, density=True, alpha=0.55, label="current", color="#c0392b")
            ax.legend()
        ax.set_title(f"{column}: {row.test} p={row.p_value:.2e} ({'drifted' if row.drifted else 'stable'})")
        fig.tight_layout()
        name = f"feature_{column}.png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        images.append(name)

    rows = "\n".join(
        f"<tr class='{'drift' if row.drifted else ''}'><td>{html.escape(row.feature)}</td><td>{row.test}</td>"
        f"<td>{row.statistic:.4g}</td><td>{row.p_value:.3g}</td><td>{row.threshold:.3g}</td>"
        f"<td>{'' if math.isnan(row.effect) else f'{row.effect:+.4f}'}</td>"
        f"<td>{'yes' if row.drifted else 'no'}{'' if row.counted else ' (not counted)'}</td></tr>"
        for row in sorted(result.tests, key=lambda row: row.p_value)
    )
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:left}}
tr.drift{{background:#fadbd8}} .verdict{{font-size:1.3em}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="verdict"><b>{html.escape(result.summary())}</b></p>
<p>Backend {result.backend}; {result.reference_rows:,} reference rows, {result.current_rows:,} current rows;
level {result.p_value} with {result.correction} correction over the per-feature tests and over the segments.
Effect: KS distance, total variation distance of the category shares, or a segment's growth in share.</p>
<img src="pvalues.png" alt="p-values">
{"".join(f'<img src="{name}" alt="{name}">' for name in images)}
<table><tr><th>feature / segment</th><th>test</th><th>statistic</th><th>p-value</th><th>threshold</th><th>effect</th>
<th>drifted</th></tr>
{rows}</table></body></html>
"""
    path = out_dir / "report.html"
    path.write_text(body, encoding="utf-8")
    (out_dir / "drift_result.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return path


def log_report(client: Any, experiment_id: str, ds: dt.date, folder: Path, day: ScoredDay, result: DriftResult) -> str:
    """Log the report folder into the day's monitoring run (created once, reused by reruns); returns its id."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`loopline.kind` = 'drift' AND tags.`loopline.ds` = '{ds.isoformat()}'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(
            experiment_id,
            run_name=f"drift_monitor__{ds.isoformat()}",
            tags={"loopline.kind": "drift", "loopline.ds": ds.isoformat()},
        )
        run_id = run.info.run_id
    client.set_tag(run_id, "loopline.model_version", str(day.model_version))
    client.set_tag(run_id, "loopline.drift", str(result.drift).lower())
    client.set_tag(run_id, "loopline.summary", result.summary()[:5000])
    client.log_artifacts(run_id, str(folder), "report")
    from mlflow.entities import Metric

    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    metrics = {
        "signals": result.signals,
        "drifted_features": len(result.drifted_features),
        "drifted_segments": len(result.drifted_segments),
    }
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])
    client.set_terminated(run_id)
    return run_id


def write_drift(
    conn: Any,
    schema: str,
    day: ScoredDay,
    result: DriftResult,
    *,
    report_uri: str | None,
    mlflow_run_id: str | None,
    airflow_run_id: str | None,
) -> int:
    """Replace the day in ``drift_runs`` and ``drift_reports`` in one transaction; returns the test rows written."""
    _check_schema(schema)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {schema}.drift_runs WHERE ds = %s", (day.ds,))  # noqa: S608 - validated
            cur.execute(
                f"""INSERT INTO {schema}.drift_runs
                (ds, model_name, model_version, backend, drift, signals, min_signals, drifted_features,
                 multivariate_drifted, score_drifted, reference_rows, current_rows, summary, report_uri,
                 mlflow_run_id, airflow_run_id, warming_features, drifted_segments)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",  # noqa: S608
                (
                    day.ds,
                    day.model_name,
                    day.model_version,
                    result.backend,
                    result.drift,
                    result.signals,
                    result.min_drifted_features,
                    list(result.drifted_features),
                    result.multivariate_drifted,
                    result.score_drifted,
                    result.reference_rows,
                    result.current_rows,
                    result.summary(),
                    report_uri,
                    mlflow_run_id,
                    airflow_run_id,
                    list(result.warming_features),
                    list(result.drifted_segments),
                ),
            )
            cur.executemany(
                f"""INSERT INTO {schema}.drift_reports
                (ds, feature, test, statistic, p_value, threshold, drifted, counted, effect, model_version)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",  # noqa: S608
                [
                    (
                        day.ds,
                        row.feature,
                        row.test,
                        _finite(row.statistic),
                        _finite(row.p_value),
                        row.threshold,
                        row.drifted,
                        row.counted,
                        _finite(row.effect),
                        day.model_version,
                    )
                    for row in result.tests
                ],
            )
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return len(result.tests)


def _finite(value: float) -> float | None:
    """NaN (a test that could not be computed) is stored as NULL; infinities as Postgres' Infinity."""
    return None if math.isnan(value) else float(value)
