"""Static checks of the production-like stack: docker-compose.yaml, .env.example and docker/*.Dockerfile.

No Docker engine is needed: the compose file is validated against the Compose Specification schema with
check-jsonschema, then parsed and held to the project's policies (healthchecks, loopback-only ports,
secrets only from .env, the Loopline wiring of the Airflow containers); the Dockerfiles are parsed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from loopline.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
AIRFLOW_DOCKERFILE = ROOT / "docker" / "airflow.Dockerfile"
TRAINER_DOCKERFILE = ROOT / "docker" / "trainer.Dockerfile"
SPARK_DOCKERFILE = ROOT / "docker" / "spark-connect.Dockerfile"

AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
    "airflow-cli",
}
EXPECTED_SERVICES = AIRFLOW_SERVICES | {
    "postgres",
    "redis",
    "mlflow",
    "minio",
    "minio-init",
    "predictions-db",
    "predictions-migrate",
    "spark-connect",
}
# Jobs that run to completion (or on demand, like the CLI): no healthcheck, nothing waits for them healthy.
ONE_SHOT = {"check-secrets", "airflow-init", "minio-init", "airflow-cli", "predictions-migrate"}
# Airflow components that run Loopline tasks and therefore need the Loopline services up first.
TASK_RUNNERS = {"airflow-worker", "airflow-triggerer"}
SERVICES_ENV = ROOT / "include" / "loopline" / "config" / "services.env"
BUCKETS = {"loopline-landing", "loopline-lake", "loopline-reports", "loopline-mlflow"}

SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN")
# One required interpolation and nothing else: ${NAME:?message} (or ${NAME?message}).
REQUIRED_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}$")
# Compose interpolation tokens: "$$" (a literal "$"), ${NAME<modifier>} and $NAME.
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(\$\{[^}]*\}|[^@\s/]+)@")


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (keys are not interpolated by compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _referenced_variables(text: str) -> set[str]:
    names = set()
    for match in INTERPOLATION.finditer(text):
        name = match.group(1) or match.group(3)
        if name:
            names.add(name)
    return names


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation, enough for this file: $$, ${X}, ${X:-d}, ${X-d}, ${X:?m}, ${X?m}, $X."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        modifier = match.group(2) or ""
        value = env.get(name)
        if modifier.startswith((":-", "-")):
            default = modifier.split("-", 1)[1]
            unset = value is None or (modifier.startswith(":") and value == "")
            return default if unset else value
        if modifier.startswith((":?", "?")):
            if value is None or (modifier.startswith(":") and value == ""):
                raise KeyError(f"required variable {name} is not set ({modifier.split('?', 1)[1]})")
            return value
        if modifier:
            raise AssertionError(f"unsupported interpolation modifier in {match.group(0)!r}")
        return value or ""

    return INTERPOLATION.sub(replace, text)


def _env_file(path: Path) -> dict[str, str]:
    from loopline.stack import read_env_file

    return read_env_file(path)


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    """What a container gets: its env files, then its environment (which wins, as in compose)."""
    files = service.get("env_file") or []
    merged: dict[str, str] = {}
    for entry in [files] if isinstance(files, str) else files:
        path = entry if isinstance(entry, str) else entry["path"]
        # .env is the operator's own (git-ignored): its names are .env.example's
        merged.update(_env_file(ENV_EXAMPLE if path == ".env" else ROOT / path))
    env = service.get("environment") or {}
    if isinstance(env, list):
        return merged | dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return merged | {key: "" if value is None else str(value) for key, value in env.items()}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{dockerfile.name} ends inside a continued line"
    return instructions


def _last(instructions: list[tuple[str, str]], keyword: str) -> str:
    values = [arguments for name, arguments in instructions if name == keyword]
    assert values, f"no {keyword} instruction"
    return values[-1]


def _pin(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements.txt")


# ---------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for number, raw in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example:{number}: not NAME=value: {raw!r}"
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f".env.example:{number}: bad name {name!r}"
        assert name not in values, f".env.example defines {name} twice"
        values[name] = value
    return values


@pytest.fixture(scope="module")
def airflow_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return _environment(services["airflow-worker"])


# ---------------------------------------------------------------------------------------------------------
# The Compose Specification


def test_compose_file_matches_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"check-jsonschema failed:\n{result.stdout}\n{result.stderr}"


def test_compose_file_explains_its_use() -> None:
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\n---", 1)[0]
    for phrase in ("cp .env.example .env", "docker compose up -d", *sorted(EXPECTED_SERVICES)):
        assert phrase in header, f"the header comment does not mention {phrase!r}"


# ---------------------------------------------------------------------------------------------------------
# Services, healthchecks, ports, start order


def test_every_expected_service_exists(services: dict[str, dict[str, Any]]) -> None:
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"


def test_one_shot_jobs_do_not_restart(services: dict[str, dict[str, Any]]) -> None:
    for name in ONE_SHOT:
        assert services[name].get("restart", "no") == "no", f"{name} must run once"


def test_published_ports_bind_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, Mapping):
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"
    assert published, "nothing is published at all"


@pytest.mark.parametrize(
    ("service", "port"),
    [("airflow-apiserver", 8080), ("mlflow", 5000), ("minio", 9000), ("spark-connect", 15002)],
)
def test_user_facing_ports_are_published(services: dict[str, dict[str, Any]], service: str, port: int) -> None:
    assert f"127.0.0.1:{port}:{port}" in services[service]["ports"]


def test_depends_on_waits_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, Mapping), f"{name}: use the long depends_on form with a condition"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = (spec or {}).get("condition")
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}: {condition}"


def _waits_for(services: dict[str, dict[str, Any]], name: str, target: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether ``name`` starts only after ``target``, directly or through what it depends on."""
    depends_on = services[name].get("depends_on", {})
    return target in depends_on or any(
        _waits_for(services, other, target, seen | {name}) for other in depends_on if other not in seen
    )


def test_every_service_waits_for_the_secrets_check(services: dict[str, dict[str, Any]]) -> None:
    for name in set(services) - {"check-secrets"}:
        assert _waits_for(services, name, "check-secrets"), f"{name} can start with a change-me secret"


def _run_secrets_check(services: dict[str, dict[str, Any]], env: Mapping[str, str]) -> subprocess.CompletedProcess:
    """The check-secrets service's own command, run by a local shell with ``env`` as its .env file gives it."""
    command = [part.replace("$$", "$") for part in services["check-secrets"]["command"]]
    return subprocess.run(command, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True)


def test_the_secrets_check_refuses_change_me_values_and_names_them(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    assert services["check-secrets"]["env_file"] == [{"path": ".env", "required": True}]
    refused = _run_secrets_check(services, env_example)
    assert refused.returncode == 1
    assert "AIRFLOW_JWT_SECRET" in refused.stderr
    assert "change-me" not in refused.stderr.replace("change-me values", ""), "a value leaked into the message"
    one_left = {name: ("x" + name.lower() if "change-me" in value else value) for name, value in env_example.items()}
    one_left["MINIO_ROOT_PASSWORD"] = env_example["MINIO_ROOT_PASSWORD"]  # its placeholder, left in
    still = _run_secrets_check(services, one_left)
    assert still.returncode == 1
    assert "MINIO_ROOT_PASSWORD" in still.stderr
    assert "AIRFLOW_JWT_SECRET" not in still.stderr
    filled = {name: ("x" + name.lower() if "change-me" in value else value) for name, value in env_example.items()}
    assert _run_secrets_check(services, filled).returncode == 0


def test_airflow_components_wait_for_core_services_and_init(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES - ONE_SHOT:
        depends_on = services[name]["depends_on"]
        assert {"postgres", "redis", "airflow-init"} <= set(depends_on), name
    for name in TASK_RUNNERS:
        depends_on = services[name]["depends_on"]
        needed = {"minio", "minio-init", "mlflow", "predictions-db", "predictions-migrate", "spark-connect"}
        assert needed <= set(depends_on), f"{name} misses {sorted(needed - set(depends_on))}"


# ---------------------------------------------------------------------------------------------------------
# Secrets and .env.example


def test_every_interpolated_variable_is_in_env_example(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    referenced = set()
    for text in _strings(compose):
        referenced |= _referenced_variables(text)
    assert referenced, "the compose file interpolates nothing"
    missing = referenced - set(env_example)
    assert not missing, f"used in docker-compose.yaml, not defined in .env.example: {sorted(missing)}"


def test_env_example_has_only_placeholder_secrets(env_example: dict[str, str]) -> None:
    assert env_example.get("AIRFLOW_UID") == "50000"
    secrets = {name: value for name, value in env_example.items() if SECRET_NAME.search(name)}
    assert secrets, ".env.example defines no secrets at all"
    for name, value in secrets.items():
        assert "change-me" in value, f".env.example: {name} must be an obvious placeholder (change-me...)"


def test_dot_env_is_git_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored


def test_the_whole_file_interpolates_with_the_example_values(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    texts = list(_strings(compose))
    for text in texts:
        interpolate(text, env_example)  # raises on a required variable the example leaves unset
    without_fernet = {k: v for k, v in env_example.items() if k != "AIRFLOW_FERNET_KEY"}
    fernet = next(text for text in texts if "AIRFLOW_FERNET_KEY" in text)
    with pytest.raises(KeyError, match="AIRFLOW_FERNET_KEY"):
        interpolate(fernet, without_fernet)


def test_secret_environment_values_are_required_interpolations(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        if name == "check-secrets":
            continue  # it reads .env itself, to check its values
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                checked += 1
                assert REQUIRED_INTERPOLATION.match(value), (
                    f"{name}: {key} must be ${{VAR:?...}} from .env, not {value!r}"
                )
    assert checked >= 10, "expected the stack's passwords and keys to be checked"


def test_passwords_inside_urls_and_connections_are_interpolations(compose: dict[str, Any]) -> None:
    for text in _strings(compose):
        for match in URL_PASSWORD.finditer(text):
            assert REQUIRED_INTERPOLATION.match(match.group(1)), f"literal password in URL: {text!r}"
        if text.lstrip().startswith("{") and '"conn_type"' in text:
            connection = json.loads(text)
            for field in ("login", "password"):
                if field in connection:
                    assert REQUIRED_INTERPOLATION.match(connection[field]), f"{field} literal in {text!r}"


# ---------------------------------------------------------------------------------------------------------
# Airflow wiring


def test_airflow_services_use_the_common_image_and_celery(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    common = compose["x-airflow-common"]
    assert common["build"]["dockerfile"] == "docker/airflow.Dockerfile"
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service["image"] == common["image"], f"{name} does not use the x-airflow-common image"
        env = _environment(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name
        assert "@postgres:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags", name
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-worker"]["command"] == "celery worker"


def test_airflow_services_mount_the_project(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        targets = {volume.split(":")[1] for volume in services[name]["volumes"]}
        for folder in ("dags", "plugins", "include", "spark_jobs"):
            assert f"/opt/airflow/{folder}" in targets, f"{name} does not mount ./{folder}"


def test_airflow_services_get_the_loopline_connections(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    config = load_config(environ={})
    expected = {
        config.postgres.conn_id: "postgres",
        config.storage.aws_conn_id: "aws",
        config.spark.conn_id: "spark_connect",
        config.mlflow.conn_id: "http",
    }
    assert set(expected) == {"loopline_postgres", "loopline_s3", "loopline_spark", "loopline_mlflow"}
    for name in AIRFLOW_SERVICES:
        env = _environment(services[name])
        for conn_id, conn_type in expected.items():
            variable = f"AIRFLOW_CONN_{conn_id.upper()}"
            assert variable in env, f"{name} lacks {variable}"
            connection = json.loads(interpolate(env[variable], env_example))
            assert connection["conn_type"] == conn_type, f"{name}: {variable}"

    env = _environment(services["airflow-worker"])
    postgres = json.loads(interpolate(env["AIRFLOW_CONN_LOOPLINE_POSTGRES"], env_example))
    assert (postgres["host"], postgres["port"], postgres["schema"]) == ("predictions-db", 5432, "loopline")
    # the tasks log in as the loader role, never as the database's superuser
    assert postgres["login"] == env_example["PREDICTIONS_LOADER_USER"] == config.postgres.loader_role
    assert postgres["password"] == env_example["PREDICTIONS_LOADER_PASSWORD"]
    assert postgres["login"] != env_example["PREDICTIONS_POSTGRES_USER"]
    s3 = json.loads(interpolate(env["AIRFLOW_CONN_LOOPLINE_S3"], env_example))
    assert s3["extra"]["endpoint_url"] == "http://minio:9000"
    assert s3["password"] == env_example["LOOPLINE_S3_SECRET_ACCESS_KEY"]
    spark = json.loads(interpolate(env["AIRFLOW_CONN_LOOPLINE_SPARK"], env_example))
    assert (spark["host"], spark["port"]) == ("sc://spark-connect", 15002)


def test_loopline_overrides_validate_and_point_at_the_services(airflow_env: dict[str, str]) -> None:
    overrides = {key: value for key, value in airflow_env.items() if key.startswith("LOOPLINE__")}
    config = load_config(environ=overrides)  # unknown keys or bad values raise ConfigError
    assert config.storage.landing_uri == "s3://loopline-landing/landing"
    assert config.storage.lake_uri == "s3a://loopline-lake/lake"
    assert config.mlflow.tracking_uri == "http://mlflow:5000"
    assert config.spark.connect_url == "sc://spark-connect:15002"
    # S3 only through the loopline_s3 connection, MLflow artifacts only through the tracking server.
    assert not [name for name in airflow_env if name.startswith(("AWS_", "MLFLOW_"))]


def test_compose_and_the_cluster_profile_share_the_service_settings(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    from loopline import cluster

    assert cluster.SERVICES_ENV.resolve() == SERVICES_ENV.resolve()
    shared = _env_file(SERVICES_ENV)
    assert not set(shared) & set(_env_file(cluster.CLUSTER_ENV)), "dev/cluster.env redefines a shared setting"
    assert {"AIRFLOW__CORE__EXECUTOR", "LOOPLINE__STORAGE__LANDING_URI", "LOOPLINE_BUCKETS"} <= set(shared)
    assert compose["x-airflow-common"]["env_file"] == ["include/loopline/config/services.env"]
    for name, service in services.items():
        redefined = set(shared) & set(service.get("environment") or {})
        assert not redefined, f"{name} redefines {sorted(redefined)}: change include/loopline/config/services.env"
    for name in AIRFLOW_SERVICES | {"minio-init", "mlflow"}:
        env = _environment(services[name])
        assert {key: env[key] for key in shared} == shared, name


# ---------------------------------------------------------------------------------------------------------
# Storage, MLflow, Spark


def test_minio_init_creates_every_bucket_the_stack_uses(
    services: dict[str, dict[str, Any]], airflow_env: dict[str, str]
) -> None:
    script = " ".join(_strings(services["minio-init"].get("command")))
    created = set(_environment(services["minio-init"])["LOOPLINE_BUCKETS"].split())
    assert "$${LOOPLINE_BUCKETS}" in script
    created |= {bucket for bucket in BUCKETS if bucket in script}
    assert created == BUCKETS, f"minio-init creates {sorted(created)}"
    assert "mc mb" in script
    used = {
        urlparse(value).netloc
        for value in [*airflow_env.values(), *_environment(services["mlflow"]).values()]
        if value.startswith(("s3://", "s3a://"))
    }
    assert used == BUCKETS, f"buckets referenced {sorted(used)} vs created {sorted(BUCKETS)}"


def test_mlflow_uses_its_own_postgres_and_minio(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    mlflow = services["mlflow"]
    env = _environment(mlflow)
    backend = urlparse(interpolate(env["MLFLOW_BACKEND_STORE_URI"], env_example))
    assert backend.scheme.startswith("postgresql")
    assert backend.hostname == "mlflow-db"
    assert backend.path == "/mlflow"
    assert backend.password == env_example["MLFLOW_POSTGRES_PASSWORD"]
    command = " ".join(_strings(mlflow["command"]))
    assert "--app-name basic-auth" in command, "MLflow must refuse anonymous requests"
    assert "--serve-artifacts" in command
    assert '--artifacts-destination "$${LOOPLINE__MLFLOW__ARTIFACT_URI}"' in command
    assert env["LOOPLINE__MLFLOW__ARTIFACT_URI"].startswith("s3://loopline-mlflow/")
    assert REQUIRED_INTERPOLATION.match(env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    assert "mlflow" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert services["mlflow-db"]["image"].startswith("postgres:")


def test_predictions_db_is_postgres_16(services: dict[str, dict[str, Any]]) -> None:
    database = services["predictions-db"]
    assert database["image"].split(":")[1].startswith("16")
    assert _environment(database)["POSTGRES_DB"] == "loopline"


def test_spark_connect_serves_s3a_on_the_compose_network(services: dict[str, dict[str, Any]]) -> None:
    spark = services["spark-connect"]
    assert spark["build"]["dockerfile"] == "docker/spark-connect.Dockerfile"
    command = spark["command"]
    assert "org.apache.spark.sql.connect.service.SparkConnectServer" in command
    assert "spark.connect.grpc.binding.port=15002" in command
    assert "spark.hadoop.fs.s3a.endpoint=http://minio:9000" in command
    assert not any("binding.address=127.0.0.1" in part for part in command), "must accept other containers"


# ---------------------------------------------------------------------------------------------------------
# Dockerfiles


def test_airflow_dockerfile_builds_on_the_pinned_airflow() -> None:
    instructions = _instructions(AIRFLOW_DOCKERFILE)
    base = next(arguments for name, arguments in instructions if name == "FROM")
    assert base.startswith("apache/airflow:3.3.0"), base
    assert base.startswith(f"apache/airflow:{_pin('apache-airflow')}-python3.11"), "image and pin disagree"
    assert _last(instructions, "USER") == "airflow"
    text = AIRFLOW_DOCKERFILE.read_text(encoding="utf-8")
    assert "-c constraints.txt" in text
    assert "requirements" in text
    assert "download.pytorch.org/whl/cpu" in text, "torch must come from the CPU index"


def test_trainer_dockerfile_runs_the_trainer_as_non_root() -> None:
    instructions = _instructions(TRAINER_DOCKERFILE)
    user = _last(instructions, "USER").split(":")[0]
    assert user not in {"root", "0"}, f"trainer runs as {user}"
    entrypoint = json.loads(_last(instructions, "ENTRYPOINT"))  # exec form, so signals reach python
    assert entrypoint[:3] == ["python", "-m", "loopline.training"], entrypoint
    runs = " ".join(arguments for name, arguments in instructions if name == "RUN")
    assert "apache-airflow" not in runs, "the trainer must not get Airflow"
    assert "requirements.txt" not in runs, "the trainer must not get Airflow (requirements.txt has it)"
    assert re.search(r"\bxgboost\b", runs)
    assert re.search(r"\bmlflow\b", runs)


def test_python_images_match_the_project_python() -> None:
    requires = re.search(r'requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert requires
    assert ">=3.11" in requires.group(1)
    for dockerfile in (AIRFLOW_DOCKERFILE, TRAINER_DOCKERFILE, SPARK_DOCKERFILE):
        base = next(arguments for name, arguments in _instructions(dockerfile) if name == "FROM")
        assert "3.11" in base, f"{dockerfile.name}: {base}"


def test_spark_image_hadoop_aws_matches_pyspark_hadoop() -> None:
    text = SPARK_DOCKERFILE.read_text(encoding="utf-8")
    match = re.search(r"^ARG HADOOP_AWS_VERSION=(\S+)$", text, flags=re.MULTILINE)
    assert match, "spark-connect.Dockerfile must pin HADOOP_AWS_VERSION"
    pyspark = pytest.importorskip("pyspark")
    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        pytest.skip("this pyspark has no bundled Hadoop jars")
    bundled = jars[0].name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    assert match.group(1) == bundled, f"hadoop-aws {match.group(1)} vs pyspark's Hadoop {bundled}"
    assert pyspark.__version__ == _pin("pyspark"), "the venv's pyspark is not the pinned one"


def test_predictions_migrate_bootstraps_the_roles_and_migrates_before_any_task(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    """The one-shot that alone holds the predictions superuser: roles with their .env passwords, then the
    migrations as the owner (`loopline migrate --admin-conn-id`); the task runners wait for it."""
    from loopline import cli

    job = services["predictions-migrate"]
    command = " ".join(job["command"])
    assert "loopline migrate --admin-conn-id loopline_postgres_admin" in command
    env = _environment(job)
    admin = json.loads(interpolate(env["AIRFLOW_CONN_LOOPLINE_POSTGRES_ADMIN"], env_example))
    assert (admin["host"], admin["login"]) == ("predictions-db", env_example["PREDICTIONS_POSTGRES_USER"])
    for key, variable in cli.PASSWORD_VARS.items():
        kind = key.removesuffix("_role").upper()
        assert interpolate(env[variable], env_example) == env_example[f"PREDICTIONS_{kind}_PASSWORD"]
    roles = load_config(environ={k: interpolate(v, env_example) for k, v in env.items() if k.startswith("LOOPLINE__")})
    assert (roles.postgres.owner_role, roles.postgres.loader_role, roles.postgres.analyst_role) == (
        env_example["PREDICTIONS_OWNER_USER"],
        env_example["PREDICTIONS_LOADER_USER"],
        env_example["PREDICTIONS_ANALYST_USER"],
    )
    assert job["depends_on"]["predictions-db"]["condition"] == "service_healthy"
    for name in TASK_RUNNERS:
        assert services[name]["depends_on"]["predictions-migrate"]["condition"] == "service_completed_successfully"
    # the superuser's password reaches no Airflow component
    for name in AIRFLOW_SERVICES:
        assert "PREDICTIONS_POSTGRES_PASSWORD" not in json.dumps(services[name].get("environment", {}))


def test_the_secrets_check_refuses_the_role_password_placeholders(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    filled = {name: "s3cretvalue" for name in env_example}
    for kind in ("OWNER", "LOADER", "ANALYST"):
        name = f"PREDICTIONS_{kind}_PASSWORD"
        assert "change-me" in env_example[name]
        result = _run_secrets_check(services, {**filled, name: env_example[name]})
        assert result.returncode != 0
        assert name in result.stderr
