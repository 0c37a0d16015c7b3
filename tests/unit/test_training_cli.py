"""The trainer CLI's argument handling (no training: bad input stops before any heavy import)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from loopline.training.__main__ import build_parser, main


def test_arguments_parse_with_config_defaults_left_empty():
    args = build_parser().parse_args(["--cutoff", "2026-02-28", "--model-type", "mlp", "--device", "cpu"])
    assert args.cutoff == dt.date(2026, 2, 28)
    assert args.model_type == "mlp"
    assert args.window_days is None  # None: the config's value is used
    assert args.device == "cpu"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --cutoff"),
        (["--cutoff", "2026-02-30"], "'2026-02-30' is not a date"),
        (["--cutoff", "2026-02-28", "--window-days", "0"], "'0' must be >= 1"),
        (["--cutoff", "2026-02-28", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["--cutoff", "2026-02-28", "--learning-rate", "-1"], "'-1' must be > 0"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("loopline.training: error: ")
    assert message in lines[0]
    result = json.loads(captured.out.strip().splitlines()[-1].removeprefix("LOOPLINE_RESULT "))
    assert result["exit_code"] == 2


def test_attempts_of_one_training_share_a_key():
    from loopline.training.tracking import training_key

    assert training_key("train_model__manual__2026-02-01__try1") == "train_model__manual__2026-02-01"
    key = "train_model__scheduled__2026-02-01"
    assert training_key(f"{key}__try12") == training_key(f"{key}__try2") == key
    assert training_key("xgboost-2026-02-01") == "xgboost-2026-02-01"
