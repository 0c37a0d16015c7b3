"""The MLflow tracking server behind MLflow's basic-auth app: the people's way into the runs and the registry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from loopline.config import LooplineConfig, resolve_uri
from loopline.runtime.supervisor import Health, host_port, http_ok, state_dir, venv_bin, write_private


def mlflow_command(cfg: LooplineConfig) -> list[str]:
    artifacts = Path(resolve_uri(cfg.mlflow.artifact_uri))
    artifacts.mkdir(parents=True, exist_ok=True)
    backend = resolve_uri(cfg.mlflow.tracking_uri)
    if backend.startswith("sqlite:///"):
        Path(backend.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return [*mlflow_server(cfg, backend), "--default-artifact-root", str(artifacts)]


def mlflow_server(cfg: LooplineConfig, backend: str) -> list[str]:
    """``mlflow server`` behind MLflow's basic-auth app on the configured UI address, with one worker and
    ``backend`` as its store; each profile adds how artifacts are stored."""
    host, port = host_port(cfg.mlflow.ui_url, 5000)
    command = [str(venv_bin() / "mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1"]
    return [*command, "--app-name", "basic-auth", "--backend-store-uri", backend]


def mlflow_auth_config(users_db: str, admin_password: str) -> Path:
    """The basic-auth app's settings (mode 0600): its users in ``users_db``, new users may only read."""
    path = state_dir() / "mlflow-auth.ini"
    write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {users_db}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return path


def mlflow_auth_env(env: Mapping[str, str], keys: Mapping[str, str], auth_ini: Path) -> dict[str, str]:
    """The tracking server's environment: its auth settings file and the secret that signs its sessions."""
    secret = keys["MLFLOW_FLASK_SECRET"]
    return {**env, "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret}


def mlflow_login_hint() -> str:
    """Where a person finds the MLflow UI's login (never the password itself: it would land in logs)."""
    return f"(user admin, password MLFLOW_ADMIN_PASSWORD in {state_dir() / 'secrets.json'})"


def mlflow_health(cfg: LooplineConfig) -> Health:
    ok, body = http_ok(f"{cfg.mlflow.ui_url.rstrip('/')}/health")
    return Health("mlflow", ok, f"{cfg.mlflow.ui_url} {body.strip()[:60]}")
