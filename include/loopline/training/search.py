"""Hyper-parameter search inside the trainer: Optuna over ``training.search.space``, one nested MLflow run per trial.

:func:`run_search` runs in the training's MLflow run (the parent): every trial fits the model type with sampled
parameters on the training split, early-stops on the validation split, and is pruned when its validation PR AUC
trails the median of earlier trials at the same round (after ``warmup_steps``). Each trial is a nested run with
its parameters, its validation PR AUC and whether it was pruned. The study is named after the training (model
type, cutoff, data fingerprint, seed) and kept in ``storage_url`` when one is given, so a killed trainer that is
started again resumes: finished and pruned trials count toward ``trials``, trials the kill left running are
marked failed and enqueued again. The sampler is seeded (TPE, ``training.seed``), so a rerun repeats the search.

The winner's parameters are returned; the trainer fits the model the gate sees with them.
No Airflow: called by :func:`loopline.training.trainer.run_training`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from loopline.training.models import TrainParams, train_model

log = logging.getLogger("loopline.training.search")
STORAGE_ENV = "LOOPLINE_SEARCH_STORAGE_URL"
_INTEGER_PARAMS = ("max_depth", "batch_size")


@dataclass(frozen=True)
class SearchResult:
    """What the search found and what it cost."""

    study_name: str
    storage: str  # "rdb" (resumable) or "memory"
    params: dict[str, Any]  # the winner's sampled parameters
    best_value: float  # its validation PR AUC
    best_trial: int
    completed: int
    pruned: int
    failed: int
    resumed: int  # finished trials found in the study when this attempt started
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def storage_url(configured: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """``$LOOPLINE_SEARCH_STORAGE_URL``, else ``training.search.storage_url`` (None: in memory)."""
    return (os.environ if environ is None else environ).get(STORAGE_ENV) or configured


def rdb_url(postgres_uri: str, schema: str) -> str:
    """A SQLAlchemy URL for Optuna from a Postgres connection URI (its driver kept, psycopg2 when it names
    none), with the tables in ``schema``.

    Optuna creates and upgrades its own tables, so they live in a schema of their own (``postgres.search_schema``,
    where the loader may create tables), never in the analysts' schema."""
    parts = urlsplit(postgres_uri)
    drivers = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2"}
    scheme = drivers.get(parts.scheme, parts.scheme)
    if scheme not in ("postgresql+psycopg2", "postgresql+psycopg"):
        raise ValueError(f"search storage needs a Postgres connection, got a {parts.scheme!r} URI")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


def study_name(model_type: str, cutoff: str, data_sha256: str, seed: int) -> str:
    """One study per training: same data, same model type and seed -> same study (what a rerun resumes)."""
    return f"loopline-{model_type}-{cutoff}-{data_sha256[:16]}-s{seed}"


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Sample one value per configured range (``SearchRange``: low, high, log)."""
    out: dict[str, Any] = {}
    for name, bounds in sorted(space.items()):
        if name in _INTEGER_PARAMS:
            out[name] = trial.suggest_int(name, int(bounds.low), int(bounds.high), log=bounds.log)
        else:
            out[name] = trial.suggest_float(name, bounds.low, bounds.high, log=bounds.log)
    return out


def _recover(study: Any) -> int:
    """Trials a killed attempt left RUNNING: marked failed and enqueued again (same parameters). Returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return len(stale)


def run_search(
    *,
    model_type: str,
    train: Any,
    y_train: Any,
    validation: Any,
    y_validation: Any,
    base: TrainParams,
    device: str,
    search: Any,
    name: str,
    run_name: str,
) -> SearchResult:
    """Search ``search.space[model_type]`` within ``search.trials`` and ``search.minutes``; returns the winner.

    Must run inside the training's active MLflow run (trials are nested under it).
    """
    import mlflow
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = dict(search.space.get(model_type) or {})
    if not space:
        raise ValueError(f"training.search.space.{model_type}: no ranges configured to search")
    url = storage_url(search.storage_url)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=search.warmup_steps)
        if search.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=name,
        storage=url,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=pruner,
    )
    recovered = _recover(study)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    resumed = len(study.get_trials(deepcopy=False, states=finished))
    remaining = max(0, search.trials - resumed)
    log.info(
        "search %s (%s): %d trial(s) already finished, %d to run, %d re-enqueued after a kill, budget %.1f min",
        name,
        "rdb" if url else "memory",
        resumed,
        remaining,
        recovered,
        search.minutes,
    )

    parent = mlflow.active_run()
    experiment_id = parent.info.experiment_id if parent is not None else None  # trials beside their parent

    def objective(trial: Any) -> float:
        sampled = suggest(trial, space)
        params = replace(base, **sampled)
        pruned = False
        with mlflow.start_run(run_name=f"{run_name}/trial-{trial.number}", experiment_id=experiment_id, nested=True):
            mlflow.log_params({**sampled, "trial": trial.number})
            mlflow.set_tags({"loopline.search.study": name, "loopline.search.trial": str(trial.number)})

            last = [0.0]

            def report(step: int, value: float) -> None:
                last[0] = value
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at round {step}: validation PR AUC {value:.4f}")

            try:
                model = train_model(
                    model_type, train, y_train, validation, y_validation, params, device, on_iteration=report
                )
            except optuna.TrialPruned:
                pruned = True
                mlflow.set_tag("loopline.search.state", "pruned")
                mlflow.log_metric("val_pr_auc_at_prune", last[0])
            if not pruned:
                value = float(model.fit_info.best_val_pr_auc or 0.0)
                mlflow.log_metrics({"val_pr_auc": value, "best_iteration": float(model.fit_info.best_iteration)})
                mlflow.set_tag("loopline.search.state", "complete")
        if pruned:
            raise optuna.TrialPruned()
        return value

    started = time.perf_counter()
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=search.minutes * 60, gc_after_trial=False)
    seconds = time.perf_counter() - started
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"search {name}: no trial completed within the budget (training.search.minutes)")
    best = study.best_trial
    result = SearchResult(
        study_name=name,
        storage="rdb" if url else "memory",
        params=dict(best.params),
        best_value=float(best.value),
        best_trial=best.number,
        completed=len(complete),
        pruned=len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        failed=len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        resumed=resumed,
        seconds=seconds,
    )
    log.info(
        "search %s: best trial %d, validation PR AUC %.4f, %s (%d complete, %d pruned) in %.1f s",
        name,
        result.best_trial,
        result.best_value,
        result.params,
        result.completed,
        result.pruned,
        seconds,
    )
    return result


def winner_params(base: TrainParams, result: SearchResult) -> TrainParams:
    """``base`` with the winner's sampled values (integers kept integers)."""
    values = {k: int(v) if k in _INTEGER_PARAMS else float(v) for k, v in result.params.items()}
    return replace(base, **values)
