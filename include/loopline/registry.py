"""Model registry: register a trained run, gate it against the champion, move aliases, roll back.

The gate compares the candidate and the current ``champion`` on the *same* holdout rows (the candidate
run's ``holdout.parquet``), so the comparison is fair whatever each model was trained on. The candidate
becomes ``champion`` only if it beats the champion's primary metric by ``gate.min_improvement`` without
dropping any guard-rail metric by more than its allowance; the first model needs ``gate.absolute_floor``.
Otherwise it becomes ``challenger``. Anything that goes wrong before the alias move (a model that cannot
be loaded back, an unreadable holdout, a constant predictor) leaves the champion exactly as it was.

Each model's threshold metrics use its own threshold (recorded in its ``meta.json`` by the alert policy; the
configured ``threshold`` for versions without one). With ``gate.slices`` configured, both models are also
scored per slice and group on the same rows (:mod:`loopline.slices`): a candidate that wins globally but loses
more than ``gate.slices.tolerance`` in a supported group stays ``challenger``, and the decision names the slice.
The sliced metrics go to the candidate's run (``gate/slices.json``) and a model card (:mod:`loopline.model_card`)
is rendered onto it after the alias move.

Registration is idempotent per run: re-gating the same run reuses its model version.

Models are loaded only through :mod:`loopline.artifacts` (native weights + a JSON spec, no pickle). Given a
predictions database connection, the gate also:

* verifies the candidate's and the champion's files against their recorded SHA-256 digests, or hashes and
  records them when none were recorded yet (a new version), in the same transaction as the history row;
* writes the ``model_alias_history`` row *before* the MLflow alias move as ``pending`` and marks it
  ``applied`` after it, and starts with :func:`reconcile`, which settles rows a crash left pending;
* never promotes again a version that was champion and was rolled back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loopline import artifacts

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
SHADOW = "shadow"  # promotion.policy shadow_first: the gate's winner, scored in shadow until a person approves
MOVE, REMOVE = "move", "remove"  # model_alias_history.action
LABEL_COLUMNS = ("is_fraud", "label")
PENDING, APPLIED, ABANDONED = "pending", "applied", "abandoned"
ROLLED_BACK_TAG = "loopline.rolled_back"


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
    action: str = MOVE  # REMOVE: the alias was taken off ``version`` (a retired or promoted shadow)
    approved_by: str | None = None  # who approved a promotion from shadow (Airflow user)
    approved_at: str | None = None


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


def holdout_metrics(model: Any, holdout, threshold: float, proba: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of a loaded model (``predict_proba`` or a pyfunc's ``predict``) on the holdout, or of its
    holdout scores ``proba`` when already computed; a constant predictor is refused."""
    from loopline.training.evaluate import evaluate

    label = next((c for c in LABEL_COLUMNS if c in holdout.columns), None)
    if label is None:
        raise GateError(f"holdout has no label column (one of {LABEL_COLUMNS})")
    proba = _holdout_scores(model, holdout) if proba is None else proba
    if proba.shape[0] != len(holdout) or not np.all(np.isfinite(proba)):
        raise GateError("the model returned the wrong number of predictions or non-finite values")
    if np.ptp(proba) == 0:
        raise GateError("the model predicts one constant value for every holdout row")
    return {
        k: float(v)
        for k, v in evaluate(holdout[label].to_numpy(), proba, threshold).items()
        if isinstance(v, int | float)
    }


def model_threshold(model: Any, fallback: float) -> float:
    """The decision threshold recorded with a loaded model (``meta.json``'s ``decision``), else ``fallback``."""
    recorded = getattr(model, "threshold", None)
    return float(recorded) if isinstance(recorded, int | float) else float(fallback)


def _holdout_scores(model: Any, holdout) -> np.ndarray:
    from loopline.schemas import FEATURE_COLUMNS

    predict = getattr(model, "predict_proba", None) or model.predict
    return np.asarray(predict(holdout[list(FEATURE_COLUMNS)]), dtype=float).reshape(-1)


def _holdout_label(holdout):
    return holdout[next(c for c in LABEL_COLUMNS if c in holdout.columns)]


def _sliced(proba: np.ndarray, holdout, threshold: float, slicing: Any) -> dict[str, Any] | None:
    """The model's per-slice and parity metrics on the holdout (None when no slices are configured)."""
    if slicing is None or not slicing.by:
        return None
    from loopline.slices import SliceError, evaluate_slices

    label = _holdout_label(holdout).name
    try:
        return evaluate_slices(holdout, holdout[label].to_numpy(), proba, threshold, slicing)
    except SliceError as exc:
        raise GateError(str(exc)) from exc


def _log_slices(client: Any, run_id: str, sliced: dict[str, Any]) -> None:
    """The gate's sliced and parity metrics as ``gate/slices.json`` on the candidate's run (best effort)."""
    from loopline.training.tracking import json_safe

    try:
        client.log_dict(run_id, json_safe(sliced), "gate/slices.json")
    except Exception as exc:  # evidence only: the decision is recorded in the history row either way
        log.warning("could not log the gate's slice metrics to run %s: %s", run_id, exc)


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
    conn: Any | None = None,
    schema: str | None = None,
    allow_pickled: bool = False,
    policy: str = "promote",
) -> tuple[GateDecision, AliasMove]:
    """Register the run's model (once), evaluate it and the champion on its holdout, and move one alias.

    ``gate`` is the config's gate section. With ``conn``/``schema`` (the predictions database; production
    always passes them) pending moves are reconciled first, the artifacts' digests are verified or recorded and
    the move is recorded in ``model_alias_history`` (pending, alias move, applied); without them nothing is
    recorded (a benchmark's scratch registry). ``allow_pickled`` is ``registry.allow_pickled_models``.
    ``policy`` is ``promotion.policy``: with ``shadow_first`` a candidate that beats an existing champion gets
    alias ``shadow`` instead (the first model still becomes champion: there is nothing to compare it with).
    Returns the decision and the alias move.
    """
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    if conn is not None:
        reconcile(client, conn, schema, model_name)
    mlflow.set_tracking_uri(client.tracking_uri)  # artifact downloads use the same store
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="Loopline fraud model (champion/challenger).")
    version = _version_for_run(client, model_name, run_id)
    if version is None:
        # runs:/ resolves to the run's logged model (MLflow 3 stores models apart from run artifacts)
        version = mlflow.register_model(f"runs:/{run_id}/model", model_name)
    number = int(version.version)
    to_record: list[artifacts.FetchedVersion] = []

    def load(which: int, folder: Path):
        # Only the candidate may be hashed for the first time here: a champion nobody gated (an alias set
        # out of band) must not become trusted just because a later gate compared against it.
        fetched, model = artifacts.load_version(
            client,
            model_name,
            which,
            folder,
            conn=conn,
            schema=schema,
            allow_pickled=allow_pickled,
            require_digests=conn is not None and which != number,
        )
        if conn is not None and not fetched.verified:
            to_record.append(fetched)  # the candidate's first gate: hashed now, recorded with the history row
        return model

    with tempfile.TemporaryDirectory(prefix="loopline-gate-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="holdout.parquet", dst_path=tmp)
            holdout = pd.read_parquet(path)
        except Exception as exc:
            raise GateError(f"cannot read the holdout of run {run_id}: {exc}") from exc
        try:
            candidate_model = load(number, Path(tmp) / "candidate")
            candidate_threshold = model_threshold(candidate_model, threshold)
            candidate_proba = _holdout_scores(candidate_model, holdout)
            candidate = holdout_metrics(candidate_model, holdout, candidate_threshold, candidate_proba)
        except GateError:
            client.set_model_version_tag(model_name, str(number), "loopline.gate", "rejected: unusable model")
            raise
        except artifacts.ArtifactError as exc:
            client.set_model_version_tag(model_name, str(number), "loopline.gate", f"rejected: {type(exc).__name__}")
            raise GateError(str(exc)) from exc
        except Exception as exc:
            client.set_model_version_tag(model_name, str(number), "loopline.gate", "rejected: cannot load")
            raise GateError(f"model version {number} cannot be loaded back: {exc}") from exc
        client.set_model_version_tag(model_name, str(number), "loopline.threshold", f"{candidate_threshold:.8g}")
        slicing = getattr(gate, "slices", None)
        candidate_slices = _sliced(candidate_proba, holdout, candidate_threshold, slicing)

        champion_version = _alias_version(client, model_name, CHAMPION)
        champion = champion_slices = champion_proba = None
        if champion_version is not None and int(champion_version.version) != number:
            try:
                champion_model = load(int(champion_version.version), Path(tmp) / "champion")
            except artifacts.ArtifactError as exc:
                raise GateError(f"the champion cannot be loaded safely: {exc}") from exc
            champion_threshold = model_threshold(champion_model, threshold)
            champion_proba = _holdout_scores(champion_model, holdout)
            champion = holdout_metrics(champion_model, holdout, champion_threshold, champion_proba)
            champion_slices = _sliced(champion_proba, holdout, champion_threshold, slicing)

    losses: list[Any] = []
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
        if decision.promote and champion_slices is not None and candidate_slices is not None:
            from loopline.slices import significant_losses, slice_losses

            losses = significant_losses(
                slice_losses(candidate_slices, champion_slices, metric=slicing.metric, tolerance=slicing.tolerance),
                holdout,
                _holdout_label(holdout).to_numpy(),
                (candidate_proba, candidate_threshold),
                (champion_proba, champion_threshold),
                slicing,
            )
            if losses:
                decision = GateDecision(
                    False,
                    CHALLENGER,
                    f"wins globally ({decision.reason}) but loses a slice: {losses[0].describe()}"
                    + (f"; {len(losses) - 1} more slice(s) lose too" if len(losses) > 1 else ""),
                )
        rolled_back = rolled_back_from(client, model_name, number, conn=conn, schema=schema)
        if decision.promote and rolled_back:
            decision = GateDecision(
                False,
                CHALLENGER,
                f"v{number} was champion and was rolled back ({rolled_back}): re-gating does not promote it "
                f"again (it would have: {decision.reason}); train a new version",
            )
    if policy == "shadow_first" and decision.promote and decision.alias == CHAMPION and champion is not None:
        decision = GateDecision(
            False,
            SHADOW,
            f"passed the gate ({decision.reason}); deployed as shadow (promotion.policy shadow_first): judged on "
            "matured labels against the champion, promoted once a person approves",
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
            "candidate_threshold": candidate_threshold,
            "slice_losses": [loss.as_dict() for loss in losses],
        },
    )
    sliced = {"candidate": candidate_slices, "champion": champion_slices}
    if candidate_slices is not None:
        _log_slices(client, run_id, sliced)
    move_alias(client, move, lambda: _apply(client, move), conn=conn, schema=schema, digests=to_record)
    _log_card(client, move, sliced)
    return decision, move


def _log_card(client: Any, move: AliasMove, sliced: dict[str, Any]) -> None:
    """The version's model card (``model_card.md`` on its run), rendered from the records (best effort)."""
    from loopline.model_card import log_card

    try:
        log_card(
            client,
            model_name=move.model_name,
            version=move.version,
            run_id=move.run_id,
            gate={**move.metrics, "alias": move.alias, "decision": move.decision, "sliced": sliced},
        )
    except Exception as exc:  # evidence only: the decision is recorded either way
        log.warning("could not log the model card of v%s: %s", move.version, exc)


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


def move_alias(
    client: Any,
    move: AliasMove,
    apply: Callable[[], None],
    *,
    conn: Any | None,
    schema: str | None,
    digests: list[artifacts.FetchedVersion] | None = None,
) -> None:
    """Run ``apply`` (the MLflow alias move) so that the history row and the alias never disagree for long.

    The history row is committed first as ``pending`` together with the artifacts' digests, then the alias is
    moved, then the row is marked ``applied``. A crash in between leaves a pending row that :func:`reconcile`
    settles from MLflow's actual alias. Without ``conn`` only ``apply`` runs.
    """
    if conn is None:
        apply()
        return
    with _model_lock(conn, move.model_name):  # a reconcile elsewhere must not settle this row mid-move
        row_id = _insert_history(conn, schema, move, PENDING)
        for fetched in digests or ():
            artifacts.record_digests(conn, schema, fetched.model_name, fetched.version, fetched.digests)
        conn.commit()
        try:
            apply()
        except Exception:
            with contextlib.suppress(Exception):  # best effort now; the next gate reconciles anyway
                conn.rollback()
                reconcile(client, conn, schema, move.model_name)
            raise
        _mark(conn, schema, row_id, APPLIED)


# Second key space of Postgres advisory locks (pg_advisory_lock(class, key)): alias moves per model.
_ALIAS_LOCK_CLASS = 0x0A1A5


@contextlib.contextmanager
def _model_lock(conn: Any, model_name: str) -> Iterator[None]:
    """Hold the model's alias-move lock for this session (re-entrant; survives the commits inside)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_ALIAS_LOCK_CLASS, model_name))
    try:
        yield
    finally:
        if int(getattr(getattr(conn, "info", None), "transaction_status", 0)) == 3:  # in a failed transaction
            conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_ALIAS_LOCK_CLASS, model_name))
        conn.commit()


def _mark(conn: Any, schema: str, row_id: int, state: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE {_history(schema)} SET state = %s WHERE id = %s AND state = %s",  # noqa: S608
            (state, row_id, PENDING),
        )
    conn.commit()


def reconcile(client: Any, conn: Any, schema: str, model_name: str | None = None) -> list[tuple[int, str]]:
    """Settle alias moves a crash left ``pending``: ``applied`` when MLflow's alias points at the row's
    version, ``abandoned`` when it does not. Returns ``(row id, new state)`` per settled row.

    Runs at the start of every gate; safe to run on its own at any time (it changes nothing in MLflow).
    """
    if model_name is None:
        with conn.cursor() as cur:
            cur.execute(f"SELECT DISTINCT model_name FROM {_history(schema)} WHERE state = %s", (PENDING,))  # noqa: S608
            names = [row[0] for row in cur.fetchall()]
        conn.commit()
        return [settled for name in names for settled in reconcile(client, conn, schema, name)]
    settled = []
    with _model_lock(conn, model_name):  # never while a move of the same model is between its steps
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT id, alias, version, action FROM {_history(schema)} "  # noqa: S608 - validated identifier
                "WHERE state = %s AND model_name = %s ORDER BY id",
                (PENDING, model_name),
            )
            pending = cur.fetchall()
        conn.commit()
        for row_id, alias, version, action in pending:
            actual = _alias_version(client, model_name, alias)
            there = actual is not None and int(actual.version) == int(version)
            state = APPLIED if there != (action == REMOVE) else ABANDONED
            _mark(conn, schema, row_id, state)
            log.warning(
                "reconciled %s %s -> v%s (history row %s): %s (MLflow alias is at %s)",
                model_name,
                alias,
                version,
                row_id,
                state,
                f"v{actual.version}" if actual is not None else "nothing",
            )
            settled.append((row_id, state))
    return settled


def rolled_back_from(
    client: Any, model_name: str, version: int, *, conn: Any | None = None, schema: str | None = None
) -> str | None:
    """How ``version`` was rolled back from champion (in words), or None if it never was.

    Evidence: the version's ``loopline.rolled_back`` tag, or an applied champion move away from it made by a
    rollback in ``model_alias_history``.
    """
    tags = client.get_model_version(model_name, str(version)).tags or {}
    if tags.get(ROLLED_BACK_TAG):
        return tags[ROLLED_BACK_TAG]
    if conn is None:
        return None
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT version, moved_at, triggered_by FROM {_history(schema)} "  # noqa: S608
            "WHERE model_name = %s AND alias = 'champion' AND previous_version = %s AND state = 'applied' "
            "AND (triggered_by LIKE 'rollback%%' OR decision LIKE 'rollback from%%') ORDER BY id DESC LIMIT 1",
            (model_name, int(version)),
        )
        row = cur.fetchone()
    conn.commit()
    if row is None:
        return None
    return f"rolled back to v{row[0]} at {row[1]:%Y-%m-%d %H:%M} UTC by {row[2]}"


def rollback(
    client: Any,
    model_name: str,
    *,
    triggered_by: str,
    reason: str,
    conn: Any | None = None,
    schema: str | None = None,
) -> AliasMove:
    """Point ``champion`` back at the version it pointed to before its last promotion.

    The version rolled back from is tagged ``loopline.rolled_back``: the gate never promotes it again. With
    ``conn``/``schema`` the move is recorded like a gate's (pending, alias, applied).
    """
    if conn is not None:
        reconcile(client, conn, schema, model_name)
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

    def apply() -> None:
        client.set_registered_model_alias(model_name, CHAMPION, previous)
        # after the move: a failed move must not mark the still-serving champion as rolled back (a crash
        # between the two is covered by the applied rollback row in the history)
        client.set_model_version_tag(
            model_name, str(current.version), ROLLED_BACK_TAG, f"rolled back to v{previous} by {triggered_by}"
        )
        client.set_model_version_tag(model_name, str(current.version), "loopline.gate", f"rolled back to v{previous}")

    move_alias(client, move, apply, conn=conn, schema=schema)
    return move


def _history(schema: str | None) -> str:
    from loopline.db import _IDENTIFIER

    if not schema or not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain identifier")
    return f"{schema}.model_alias_history"


def _insert_history(conn: Any, schema: str, move: AliasMove, state: str) -> int:
    row = asdict(move)
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {_history(schema)} "  # noqa: S608 - validated identifier
            "(model_name, alias, version, previous_version, run_id, moved_at, triggered_by, reason, decision, metrics,"
            " state, action, approved_by, approved_at) VALUES (%(model_name)s, %(alias)s, %(version)s,"
            " %(previous_version)s, %(run_id)s, %(moved_at)s, %(triggered_by)s, %(reason)s, %(decision)s, %(metrics)s,"
            " %(state)s, %(action)s, %(approved_by)s, %(approved_at)s) RETURNING id",
            {**row, "metrics": json.dumps(row["metrics"]), "state": state},
        )
        return int(cur.fetchone()[0])


def record_move(conn: Any, schema: str, move: AliasMove) -> None:
    """Append an already applied move to ``<schema>.model_alias_history`` (callers without the pending protocol)."""
    _insert_history(conn, schema, move, APPLIED)
    conn.commit()
