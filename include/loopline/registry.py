"""Model registry: register a trained run, gate it against the champion, move aliases, roll back.

The gate compares the candidate and the current ``champion`` on the *same* holdout rows (the candidate
run's ``holdout.parquet``), so the comparison is fair whatever each model was trained on. The candidate
becomes ``champion`` only if it beats the champion's primary metric by ``gate.min_improvement`` without
dropping any guard-rail metric by more than its allowance; the first model needs ``gate.absolute_floor``.
Otherwise it becomes ``challenger``. Anything that goes wrong before the alias move (a model that cannot
be loaded back, an unreadable holdout, a constant predictor) leaves the champion exactly as it was.

Registration is idempotent per run: re-gating the same run reuses its model version.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHAMPION = "champion"
CHALLENGER = "challenger"
LABEL_COLUMNS = ("is_fraud", "label")


class GateError(RuntimeError):
    """The candidate could not be evaluated; the champion is unchanged."""


@dataclass(frozen=True)
class AliasMove:
    """One alias move, as recorded in ``model_alias_history`` and on the model version's tags."""

    model_name: str
    alias: str
    version: int
    previous_version: int | None
    run_id: str
    triggered_by: str
    reason: str
    decision: str
    metrics: dict[str, Any] = field(default_factory=dict)
    moved_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    alias: str
    reason: str


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    *,
    primary_metric: str,
    min_improvement: float,
    absolute_floor: float,
    guardrails: dict[str, float],
) -> GateDecision:
    """The champion/challenger rule, as a pure function of the metrics on the same holdout.

    The floor holds for every promotion, not only the first: on a holdout whose labels are noise (a broken
    or poisoned label feed) every model scores near chance, and a candidate could otherwise beat the
    champion by luck.
    """
    value = candidate[primary_metric]
    if value < absolute_floor:
        which = "first model" if champion is None else "candidate"
        return GateDecision(False, CHALLENGER, f"{which} below floor: {primary_metric} {value:.4f} < {absolute_floor}")
    if champion is None:
        return GateDecision(True, CHAMPION, f"first model: {primary_metric} {value:.4f} >= floor {absolute_floor}")
    gain = value - champion[primary_metric]
    if gain < min_improvement:
        return GateDecision(
            False,
            CHALLENGER,
            f"{primary_metric} {value:.4f} vs champion {champion[primary_metric]:.4f}: "
            f"gain {gain:+.4f} below the required {min_improvement}",
        )
    for metric, allowed_drop in sorted(guardrails.items()):
        drop = champion[metric] - candidate[metric]
        if drop > allowed_drop:
            return GateDecision(
                False,
                CHALLENGER,
                f"guard-rail {metric}: {candidate[metric]:.4f} vs champion {champion[metric]:.4f} "
                f"drops {drop:.4f} > allowed {allowed_drop}",
            )
    return GateDecision(
        True, CHAMPION, f"{primary_metric} {value:.4f} beats champion {champion[primary_metric]:.4f} by {gain:+.4f}"
    )


def holdout_metrics(model: Any, holdout, threshold: float) -> dict[str, float]:
    """Metrics of a loaded pyfunc model on the holdout frame; a constant predictor is refused."""
    from loopline.training.evaluate import evaluate

    label = next((c for c in LABEL_COLUMNS if c in holdout.columns), None)
    if label is None:
        raise GateError(f"holdout has no label column (one of {LABEL_COLUMNS})")
    from loopline.schemas import FEATURE_COLUMNS

    proba = np.asarray(model.predict(holdout[list(FEATURE_COLUMNS)]), dtype=float).reshape(-1)
    if proba.shape[0] != len(holdout) or not np.all(np.isfinite(proba)):
        raise GateError("the model returned the wrong number of predictions or non-finite values")
    if np.ptp(proba) == 0:
        raise GateError("the model predicts one constant value for every holdout row")
    return {
        k: float(v)
        for k, v in evaluate(holdout[label].to_numpy(), proba, threshold).items()
        if isinstance(v, int | float)
    }


def _version_for_run(client: Any, name: str, run_id: str):
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def _alias_version(client: Any, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_and_gate(
    client: Any,
    *,
    run_id: str,
    model_name: str,
    gate: Any,
    threshold: float,
    triggered_by: str,
    reason: str,
) -> tuple[GateDecision, AliasMove]:
    """Register the run's model (once), evaluate it and the champion on its holdout, and move one alias.

    ``gate`` is the config's gate section. Returns the decision and the alias move to record.
    """
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(client.tracking_uri)  # artifact downloads and model loads use the same store
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="Loopline fraud model (champion/challenger).")
    version = _version_for_run(client, model_name, run_id)
    if version is None:
        # runs:/ resolves to the run's logged model (MLflow 3 stores models apart from run artifacts)
        version = mlflow.register_model(f"runs:/{run_id}/model", model_name)
    number = int(version.version)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="holdout.parquet", dst_path=tmp)
            holdout = pd.read_parquet(path)
        except Exception as exc:
            raise GateError(f"cannot read the holdout of run {run_id}: {exc}") from exc
    try:
        candidate_model = mlflow.pyfunc.load_model(f"models:/{model_name}/{number}")
        candidate = holdout_metrics(candidate_model, holdout, threshold)
    except GateError:
        client.set_model_version_tag(model_name, str(number), "loopline.gate", "rejected: unusable model")
        raise
    except Exception as exc:
        client.set_model_version_tag(model_name, str(number), "loopline.gate", "rejected: cannot load")
        raise GateError(f"model version {number} cannot be loaded back: {exc}") from exc

    champion_version = _alias_version(client, model_name, CHAMPION)
    champion = None
    if champion_version is not None and int(champion_version.version) != number:
        champion_model = mlflow.pyfunc.load_model(f"models:/{model_name}/{champion_version.version}")
        champion = holdout_metrics(champion_model, holdout, threshold)

    if champion_version is not None and int(champion_version.version) == number:
        decision = GateDecision(True, CHAMPION, "already champion (rerun of the same training run)")
    else:
        decision = decide(
            candidate,
            champion,
            primary_metric=gate.primary_metric,
            min_improvement=gate.min_improvement,
            absolute_floor=gate.absolute_floor,
            guardrails=dict(gate.guardrails),
        )
    previous = _alias_version(client, model_name, decision.alias)
    move = AliasMove(
        model_name=model_name,
        alias=decision.alias,
        version=number,
        previous_version=int(previous.version) if previous is not None else None,
        run_id=run_id,
        triggered_by=triggered_by,
        reason=reason,
        decision=decision.reason,
        metrics={
            "candidate": candidate,
            "champion": champion,
            "champion_version": int(champion_version.version) if champion_version else None,
        },
    )
    _apply(client, move)
    return decision, move


def _apply(client: Any, move: AliasMove) -> None:
    """Move the alias and leave the evidence on the version (tags) so the registry alone tells the story."""
    version = str(move.version)
    if move.previous_version is not None and move.previous_version != move.version:
        client.set_model_version_tag(
            move.model_name, version, f"loopline.previous_{move.alias}", str(move.previous_version)
        )
    client.set_model_version_tag(move.model_name, version, "loopline.gate", move.decision[:500])
    client.set_model_version_tag(move.model_name, version, "loopline.triggered_by", move.triggered_by)
    client.set_model_version_tag(move.model_name, version, "loopline.metrics", json.dumps(move.metrics)[:4900])
    client.set_registered_model_alias(move.model_name, move.alias, version)


def rollback(client: Any, model_name: str, *, triggered_by: str, reason: str) -> AliasMove:
    """Point ``champion`` back at the version it pointed to before its last promotion."""
    current = _alias_version(client, model_name, CHAMPION)
    if current is None:
        raise GateError(f"{model_name} has no champion to roll back")
    previous = current.tags.get("loopline.previous_champion")
    if not previous:
        raise GateError(f"{model_name} v{current.version} has no previous champion recorded")
    target = client.get_model_version(model_name, previous)
    move = AliasMove(
        model_name=model_name,
        alias=CHAMPION,
        version=int(previous),
        previous_version=int(current.version),
        run_id=target.run_id,
        triggered_by=triggered_by,
        reason=reason,
        decision=f"rollback from v{current.version} to v{previous}",
    )
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.set_model_version_tag(model_name, str(current.version), "loopline.gate", f"rolled back to v{previous}")
    return move


def record_move(conn: Any, schema: str, move: AliasMove) -> None:
    """Append the move to ``<schema>.model_alias_history`` (values as parameters, schema validated)."""
    from loopline.db import _IDENTIFIER

    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain identifier")
    row = asdict(move)
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {schema}.model_alias_history "  # noqa: S608 - validated identifier
            "(model_name, alias, version, previous_version, run_id, moved_at, triggered_by, reason, decision, metrics)"
            " VALUES (%(model_name)s, %(alias)s, %(version)s, %(previous_version)s, %(run_id)s, %(moved_at)s,"
            " %(triggered_by)s, %(reason)s, %(decision)s, %(metrics)s)",
            {**row, "metrics": json.dumps(row["metrics"])},
        )
    conn.commit()


def write_decision(path: Path, decision: GateDecision, move: AliasMove) -> None:
    path.write_text(json.dumps({"decision": asdict(decision), "move": asdict(move)}, indent=2))
