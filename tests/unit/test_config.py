"""The typed config loader: defaults load, bad keys and types fail naming the key, env overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loopline.config import DEFAULT_CONFIG, ConfigError, load_config, loopline_home, resolve_uri


def _write(tmp_path: Path, mutate) -> Path:
    tree = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mutate(tree)
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_packaged_config_loads():
    cfg = load_config(environ={})
    assert cfg.version == 1
    assert cfg.postgres.schema_ == "loopline"
    assert cfg.features.window_hours() == {"1h": 1, "24h": 24, "7d": 168, "30d": 720}
    assert cfg.training.kubernetes.gpus >= 1


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, lambda t: t["storage"].update(lake_url="oops"))
    with pytest.raises(ConfigError, match=r"storage\.lake_url: unknown key"):
        load_config(path, environ={})


def test_unknown_section_is_named(tmp_path):
    path = _write(tmp_path, lambda t: t.update(sparkk={}))
    with pytest.raises(ConfigError, match=r"sparkk: unknown key"):
        load_config(path, environ={})


def test_wrong_type_is_named(tmp_path):
    path = _write(tmp_path, lambda t: t["gate"].update(min_improvement="a lot"))
    with pytest.raises(ConfigError, match=r"gate\.min_improvement: .*valid number.*'a lot'"):
        load_config(path, environ={})


def test_missing_key_is_named(tmp_path):
    path = _write(tmp_path, lambda t: t["drift"].pop("cooldown_hours"))
    with pytest.raises(ConfigError, match=r"drift\.cooldown_hours: required key is missing"):
        load_config(path, environ={})


def test_bad_enum_and_bad_window(tmp_path):
    def mutate(tree):
        tree["training"]["runner"] = "slurm"
        tree["features"]["windows"] = ["1h", "1w"]

    with pytest.raises(ConfigError) as excinfo:
        load_config(_write(tmp_path, mutate), environ={})
    assert "training.runner" in str(excinfo.value)
    assert "features.windows" in str(excinfo.value)


def test_schema_must_be_identifier(tmp_path):
    path = _write(tmp_path, lambda t: t["postgres"].update(schema="loopline; drop table x"))
    with pytest.raises(ConfigError, match=r"postgres\.schema"):
        load_config(path, environ={})


def test_segments_are_validated(tmp_path):
    cfg = load_config(environ={})
    assert [s.name for s in cfg.drift.segments] == ["card_testing", "night_burst", "high_scores"]
    both = {"feature": "score", "op": ">", "value": 0.5, "reference_quantile": 0.99}
    path = _write(tmp_path, lambda t: t["drift"]["segments"][0]["where"].append(both))
    with pytest.raises(ConfigError, match="exactly one of value or reference_quantile"):
        load_config(path, environ={})
    path = _write(tmp_path, lambda t: t["drift"]["segments"].append(dict(t["drift"]["segments"][0])))
    with pytest.raises(ConfigError, match=r"segment name.* used twice: card_testing"):
        load_config(path, environ={})
    path = _write(tmp_path, lambda t: t["drift"]["segments"][1]["where"][0].update(op="=~"))
    with pytest.raises(ConfigError, match=r"drift\.segments\.1\.where\.0\.op"):
        load_config(path, environ={})


def test_unsupported_version(tmp_path):
    with pytest.raises(ConfigError, match="version 2 is not supported"):
        load_config(_write(tmp_path, lambda t: t.update(version=2)), environ={})


def test_env_overrides_are_typed():
    cfg = load_config(
        environ={
            "LOOPLINE__STORAGE__LAKE_URI": "s3://bucket/lake",
            "LOOPLINE__GATE__MIN_IMPROVEMENT": "0.01",
            "LOOPLINE__TRAINING__KUBERNETES__GPUS": "2",
            "UNRELATED": "x",
        }
    )
    assert cfg.storage.lake_uri == "s3://bucket/lake"
    assert cfg.gate.min_improvement == 0.01
    assert cfg.training.kubernetes.gpus == 2


@pytest.mark.parametrize(("value", "expected"), [("null", None), ("'0 3 * * 0'", "0 3 * * 0"), ("'@daily'", "@daily")])
def test_training_schedule_is_a_cron_a_preset_or_off(value, expected):
    assert load_config(environ={}).training.schedule == "@weekly"
    assert load_config(environ={"LOOPLINE__TRAINING__SCHEDULE": value}).training.schedule == expected


def test_bad_training_schedule_is_named():
    with pytest.raises(ConfigError, match=r"training\.schedule: .*cron expression of 5 fields.*'every sunday'"):
        load_config(environ={"LOOPLINE__TRAINING__SCHEDULE": "every sunday"})


def test_env_override_of_unknown_key_fails():
    with pytest.raises(ConfigError, match=r"LOOPLINE__STORAGE__LAKE: unknown config key 'storage.lake'"):
        load_config(environ={"LOOPLINE__STORAGE__LAKE": "x"})


def test_env_override_with_wrong_type_fails():
    with pytest.raises(ConfigError, match=r"scoring\.threshold"):
        load_config(environ={"LOOPLINE__SCORING__THRESHOLD": "high"})


def test_config_file_from_environment(tmp_path):
    path = _write(tmp_path, lambda t: t["scoring"].update(threshold=0.7))
    assert load_config(environ={"LOOPLINE_CONFIG": str(path)}).scoring.threshold == 0.7


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_resolve_uri():
    assert resolve_uri("s3://bucket/x") == "s3://bucket/x"
    assert resolve_uri("lake") == str(loopline_home() / "lake")
    assert resolve_uri("/abs/path") == "/abs/path"
    assert resolve_uri("sqlite:///mlflow/m.db") == f"sqlite:///{loopline_home() / 'mlflow/m.db'}"
    assert resolve_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"


def test_spark_server_conf_reaches_the_local_server_command():
    from loopline.stack import spark_command

    default = spark_command(load_config())
    assert not any("codegen" in part for part in default)
    # the shipped default: C2 compiles later (benchmarks/README.md, "Spark server settings")
    java_options = next(part for part in default if part.startswith("spark.driver.extraJavaOptions="))
    assert "-XX:Tier4InvocationThreshold=50000" in java_options
    extra = load_config(environ={"LOOPLINE__SPARK__SERVER_CONF": "{spark.sql.codegen.wholeStage: false, x.y: 3}"})
    command = spark_command(extra)
    assert command[command.index("spark.sql.codegen.wholeStage=false") - 1] == "--conf"  # YAML false, not False
    assert "x.y=3" in command
    assert command[-1] == "spark-internal"  # properties before the application


def test_postgres_roles_are_distinct_plain_identifiers() -> None:
    cfg = load_config(environ={})
    assert (cfg.postgres.owner_role, cfg.postgres.loader_role, cfg.postgres.analyst_role) == (
        "loopline_owner",
        "loopline_loader",
        "loopline_analyst",
    )
    with pytest.raises(ConfigError, match="loader_role"):
        load_config(environ={"LOOPLINE__POSTGRES__LOADER_ROLE": "x; DROP TABLE y"})
    with pytest.raises(ConfigError, match="three different roles"):
        load_config(environ={"LOOPLINE__POSTGRES__ANALYST_ROLE": "loopline_owner"})


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (["1h", "7x"], "must look like"),
        (["48h", "30d"], "hour windows are sliding and span 1-24h"),
        (["1h", "90d"], "day windows span 1-62 days"),
        (["1h", "7d", "7d"], "listed twice: 7d"),
        (["1h", "24h"], "at least one day window"),
        (["07d"], "without leading zeros"),
        ([], "at least 1 item"),
    ],
)
def test_invalid_feature_windows_fail_naming_the_key(tmp_path, windows, message):
    path = _write(tmp_path, lambda t: t["features"].update(windows=windows))
    with pytest.raises(ConfigError, match=r"features\.windows: .*" + message):
        load_config(path, environ={})


def test_feature_columns_follow_the_windows():
    from loopline.schemas import feature_schema

    schema = feature_schema(["2h", "3d", "14d"])
    assert schema.count_columns == ("cnt_2h", "cnt_3d", "cnt_14d")
    assert schema.average_columns == ("avg_amount_14d", "amount_to_avg_14d", "amount_zscore_14d")
    assert {"cnt_2h", "cnt_3d", "cnt_14d"} <= set(schema.ints)
    assert not [c for c in schema.columns if c.endswith(("_1h", "_24h", "_7d", "_30d"))]
