"""``python -m loopline.training``: the trainer entrypoint, identical in a Kubernetes pod and a local process.

    python -m loopline.training --cutoff 2026-02-28 [--model-type xgboost|mlp] [--device auto|cpu|cuda] ...

Defaults come from ``loopline.yaml`` (``training``, ``features.label_maturity_days``, ``mlflow``, ``scoring``,
``drift``). Prints the result as JSON and, last on stdout, ``LOOPLINE_RESULT {json}`` for a pod's log.
Exit codes: 0 trained and logged; 2 bad input or no data (one line on stderr, no traceback); 1 unexpected.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import traceback

from loopline.training import MODEL_TYPES

RESULT_PREFIX = "LOOPLINE_RESULT "
EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT = 0, 1, 2


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-02-28") from None


def _int_at_least(minimum: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be >= {minimum}")
        return number

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _optional_positive_float(value: str) -> float | None:
    # Airflow renders an unset Param as "None"; the trainer then uses the model type's own default.
    return None if value.strip() in ("", "None") else _positive_float(value)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (plus the LOOPLINE_RESULT line), not the usage."""

    def error(self, message: str):
        sys.exit(_fail(EXIT_BAD_INPUT, f"{message} (see --help)"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m loopline.training",
        description="Train a Loopline fraud model on the lake's features and matured labels; log it to MLflow.",
        epilog="Exit codes: 0 ok, 2 bad input or no data, 1 unexpected error. Defaults come from loopline.yaml.",
    )
    parser.add_argument("--cutoff", type=_date, required=True, help="first day NOT used: data up to cutoff-1")
    parser.add_argument("--model-type", choices=MODEL_TYPES, help="default: training.model_type")
    parser.add_argument("--window-days", type=_positive_int, help="transaction days before the cutoff to consider")
    parser.add_argument("--validation-days", type=_positive_int, help="days before the holdout for early stopping")
    parser.add_argument("--holdout-days", type=_positive_int, help="most recent mature days, for evaluation")
    parser.add_argument(
        "--label-maturity-days",
        type=_non_negative_int,
        help="a day D is used when cutoff - D >= this (default: features.label_maturity_days)",
    )
    parser.add_argument("--max-rounds", type=_positive_int, help="XGBoost rounds (default training.max_rounds)")
    parser.add_argument("--early-stopping-rounds", type=_positive_int, help="XGBoost rounds without improvement")
    parser.add_argument(
        "--learning-rate",
        type=_optional_positive_float,
        help="XGBoost eta (0.1) / MLP AdamW lr (2e-3); empty or 'None' keeps the model type's default",
    )
    parser.add_argument("--max-depth", type=_positive_int, help="XGBoost tree depth (default 5)")
    parser.add_argument("--max-epochs", type=_positive_int, help="MLP epochs (default 30, capped by --max-rounds)")
    parser.add_argument("--patience", type=_positive_int, help="MLP epochs without improvement (default 4)")
    parser.add_argument("--seed", type=int, help="default training.seed")
    parser.add_argument(
        "--search-trials",
        type=_non_negative_int,
        help="hyper-parameter search budget in trials (default training.search.trials; 0: no search)",
    )
    parser.add_argument(
        "--search-minutes", type=_positive_float, help="search budget in minutes (default training.search.minutes)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    parser.add_argument("--reason", help="why this training runs (tag loopline.reason)")
    parser.add_argument("--triggered-by", help="who or what started it: manual, schedule, drift_monitor, ...")
    parser.add_argument("--run-name", help="MLflow run name (default <model-type>-<cutoff>)")
    parser.add_argument("--output-json", help="also write the result document to this path")
    parser.add_argument("--lake", help="lake root URI (default storage.lake_uri)")
    parser.add_argument(
        "--pin-id",
        help="pin the lake versions read under this id (<lake>/_PINS/) so the sweep keeps them; the caller releases it",
    )
    parser.add_argument("--tracking-uri", help="default MLFLOW_TRACKING_URI, else mlflow.tracking_uri")
    parser.add_argument("--experiment", help="MLflow experiment (default mlflow.experiment)")
    return parser


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)  # progress goes with the result into the pod log
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("loopline")
    root.setLevel(logging.INFO)
    if not any(getattr(h, "_loopline_cli", False) for h in root.handlers):
        handler._loopline_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False


def _fail(code: int, message: str) -> int:
    document = {"status": "error", "exit_code": code, "error": message}
    print(RESULT_PREFIX + json.dumps(document, sort_keys=True), flush=True)
    print(f"loopline.training: error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a bad argument exits 2 with one line on stderr
    _setup_logging()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in a pod log
    from loopline.config import ConfigError, get_config, resolve_uri

    try:  # first: the feature columns, and so the modules below, come from the config
        cfg = get_config()
    except ConfigError as exc:
        return _fail(EXIT_BAD_INPUT, " ".join(str(exc).split()))
    from loopline.thresholds import ThresholdPolicyError
    from loopline.training.dataset import TrainingDataError
    from loopline.training.models import DeviceUnavailableError

    try:
        from loopline.training.tracking import tracking_uri, write_result
        from loopline.training.trainer import TrainingOptions, run_training

        options = TrainingOptions.from_config(
            cfg,
            args.cutoff,
            model_type=args.model_type,
            window_days=args.window_days,
            validation_days=args.validation_days,
            holdout_days=args.holdout_days,
            label_maturity_days=args.label_maturity_days,
            lake=resolve_uri(args.lake) if args.lake else None,
            tracking_uri=tracking_uri(cfg.mlflow.tracking_uri, args.tracking_uri),
            experiment=args.experiment,
            device=args.device,
            reason=args.reason,
            triggered_by=args.triggered_by,
            run_name=args.run_name,
            pin_id=args.pin_id,
            seed=args.seed,
            max_rounds=args.max_rounds,
            max_depth=args.max_depth,
            early_stopping_rounds=args.early_stopping_rounds,
            learning_rate=args.learning_rate,
            max_epochs=args.max_epochs,
            patience=args.patience,
            search_trials=args.search_trials,
            search_minutes=args.search_minutes,
        )
        result = run_training(options)
    except (ConfigError, TrainingDataError, DeviceUnavailableError, ThresholdPolicyError) as exc:
        return _fail(EXIT_BAD_INPUT, " ".join(str(exc).split()))
    except Exception as exc:  # anything else is a bug or an infrastructure failure: keep the traceback
        traceback.print_exc()
        return _fail(EXIT_UNEXPECTED, f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000])

    text = write_result(result, args.output_json)
    print(json.dumps(json.loads(text), indent=2, sort_keys=True))
    print(RESULT_PREFIX + text, flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
