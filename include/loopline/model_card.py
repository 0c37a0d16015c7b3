"""A model card per registered version, rendered from what was recorded (never from memory of the run).

:func:`render` turns the training run's params, metrics and tags, its ``fingerprint.json`` and
``threshold.json``, the gate's sliced metrics and its decision into one Markdown page: data window and
fingerprint, search summary, threshold and the policy that chose it, global and per-slice metrics against the
champion, parity across the fairness attribute, and the gate's decision. :func:`collect` reads those records
from MLflow; the gate logs the card as ``model_card.md`` on the version's run (:func:`log_card`). No Airflow.
"""

from __future__ import annotations

import math
from typing import Any

CARD_PATH = "model_card.md"
GLOBAL_METRICS = ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold", "brier", "ece", "flagged_rate")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def render(
    *,
    model_name: str,
    version: int,
    run_id: str,
    params: dict[str, str],
    tags: dict[str, str],
    fingerprint: dict[str, Any] | None,
    threshold: dict[str, Any] | None,
    gate: dict[str, Any],
) -> str:
    """The card as Markdown. ``gate``: alias, decision, candidate/champion metrics, sliced, slice_losses."""
    lines = [f"# Model card: {model_name} v{version}", ""]
    lines += [
        f"- MLflow run: `{run_id}`; model type `{params.get('model_type', 'n/a')}`, "
        f"device `{tags.get('loopline.device', 'n/a')}`",
        f"- Trained for cutoff {params.get('cutoff', 'n/a')} (trigger: {tags.get('loopline.trigger', 'n/a')}; "
        f"reason: {tags.get('loopline.reason') or 'n/a'})",
        "",
        "## Data",
    ]
    if fingerprint:
        lines.append(f"- Data fingerprint (sha256): `{fingerprint.get('data_sha256', 'n/a')}`")
        for split, facts in (fingerprint.get("splits") or {}).items():
            lines.append(
                f"- {split}: {facts.get('start')} .. {facts.get('end')}, {facts.get('rows')} rows, "
                f"{facts.get('positives')} frauds"
            )
    else:
        lines.append("- fingerprint not recorded")
    lines += ["", "## Hyper-parameters and search"]
    if tags.get("loopline.search") == "on":
        lines.append(
            f"- Optuna study `{params.get('search.study')}` ({params.get('search.storage')} storage): budget "
            f"{params.get('search.trials_budget')} trials / {params.get('search.minutes_budget')} min; "
            f"winner trial {params.get('search.best_trial')}"
        )
        best = {k.removeprefix("search.best."): v for k, v in sorted(params.items()) if k.startswith("search.best.")}
        lines.append("- Winner: " + ", ".join(f"{k}={v}" for k, v in best.items()))
    else:
        lines.append("- No search: the configured parameters")
    shown = ("learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda", "seed")
    lines.append("- Fitted with: " + ", ".join(f"{k}={params[k]}" for k in shown if k in params))
    lines += ["", "## Threshold"]
    if threshold:
        low, high = threshold.get("band_low"), threshold.get("band_high")
        lines += [
            f"- Threshold {_fmt(threshold.get('threshold'))}, chosen on validation by policy "
            f"`{threshold.get('policy')}` (target {_fmt(threshold.get('target'))})",
            f"- Validation: flag rate {_fmt(threshold.get('expected_alert_rate'))}, precision "
            f"{_fmt(threshold.get('validation_precision'))}, recall {_fmt(threshold.get('validation_recall'))}",
            f"- A scored day flagging outside [{_fmt(low)}, {_fmt(high)}] raises an alert",
        ]
    else:
        lines.append(f"- Fixed threshold {params.get('threshold', 'n/a')} (no policy recorded)")
    candidate, champion = gate.get("candidate") or {}, gate.get("champion") or {}
    lines += [
        "",
        "## Global metrics on the gate's holdout",
        "",
        "| metric | this version | champion |",
        "|---|---|---|",
    ]
    for metric in GLOBAL_METRICS:
        lines.append(f"| {metric} | {_fmt(candidate.get(metric))} | {_fmt(champion.get(metric))} |")
    sliced = gate.get("sliced") or {}
    mine, theirs = sliced.get("candidate") or {}, sliced.get("champion") or {}
    if mine.get("slices"):
        lines += [
            "",
            "## Slices (same holdout; * = enough rows and frauds to decide)",
            "",
            "| slice | group | rows | frauds | ROC AUC | champion | PR AUC | recall | FPR |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, groups in mine["slices"].items():
            for group, m in sorted(groups.items()):
                champ = ((theirs.get("slices") or {}).get(name) or {}).get(group) or {}
                mark = "*" if m.get("supported") else ""
                lines.append(
                    f"| {name} | {group}{mark} | {int(m['rows'])} | {int(m['positives'])} | {_fmt(m.get('roc_auc'))} "
                    f"| {_fmt(champ.get('roc_auc'))} | {_fmt(m.get('pr_auc'))} | "
                    f"{_fmt(m.get('recall_at_threshold'))} | {_fmt(m.get('fpr_at_threshold'))} |"
                )
    parity = mine.get("parity")
    if parity:
        lines += [
            "",
            f"## Parity across `{parity['attribute']}` (fairlearn)",
            f"- demographic parity difference {_fmt(parity.get('demographic_parity_difference'))}, "
            f"equalized odds difference {_fmt(parity.get('equalized_odds_difference'))}",
        ]
    lines += ["", "## Gate decision", f"- alias `{gate.get('alias')}`: {gate.get('decision')}"]
    for loss in gate.get("slice_losses") or []:
        interval = (
            f", paired interval [{_fmt(loss['ci_low'])}, {_fmt(loss['ci_high'])}]"
            if loss.get("ci_high") is not None
            else ""
        )
        lines.append(
            f"- lost slice {loss['slice']}={loss['group']}: {loss['metric']} drop {_fmt(loss['drop'])}{interval}"
        )
    promotion = gate.get("promotion")
    if promotion:
        ev = promotion.get("evidence") or {}
        lines += [
            "",
            "## Promotion from shadow (matured labels, same transactions as the champion)",
            f"- {'approved' if promotion.get('approved') else 'not approved'} by {promotion.get('approved_by')} "
            f"at {promotion.get('approved_at')}",
            f"- {ev.get('days')} day(s), {ev.get('rows')} paired rows, {ev.get('positives')} frauds: ROC AUC "
            f"{_fmt(ev.get('shadow_auc'))} vs champion {_fmt(ev.get('champion_auc'))}, difference "
            f"{_fmt(ev.get('difference'))}, interval [{_fmt(ev.get('ci_low'))}, {_fmt(ev.get('ci_high'))}]",
        ]
    return "\n".join(lines) + "\n"


def collect(client: Any, run_id: str) -> tuple[dict[str, str], dict[str, str], dict | None, dict | None]:
    """The run's params, tags, ``fingerprint.json`` and ``threshold.json`` (None where missing)."""
    import mlflow.artifacts

    run = client.get_run(run_id)

    def load(path: str) -> dict | None:
        try:
            return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
        except Exception:
            return None

    return dict(run.data.params), dict(run.data.tags), load("fingerprint.json"), load("threshold.json")


def log_card(client: Any, *, model_name: str, version: int, run_id: str, gate: dict[str, Any]) -> str:
    """Render the card from the records and log it as ``model_card.md`` on the run; returns the text."""
    params, tags, fingerprint, threshold = collect(client, run_id)
    text = render(
        model_name=model_name,
        version=version,
        run_id=run_id,
        params=params,
        tags=tags,
        fingerprint=fingerprint,
        threshold=threshold,
        gate=gate,
    )
    client.log_text(run_id, text, CARD_PATH)
    return text


def card_url(ui_url: str, run_id: str) -> str:
    """The card in the MLflow UI's artifact server (what the gate task's extra link opens)."""
    return f"{ui_url.rstrip('/')}/get-artifact?path={CARD_PATH}&run_uuid={run_id}"
