"""`loopline up/status/down` brings the real embedded stack up on loopback and stops only what it started."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import BIN, stack_test_env

pytestmark = pytest.mark.integration


def _loopline(args: list[str], env: dict[str, str], timeout: int = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "loopline"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _listening_addresses(pids: list[int]) -> set[str]:
    addresses = set()
    for pid in pids:
        try:
            family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in family:
            try:
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        addresses.add(conn.laddr.ip)
            except psutil.NoSuchProcess:
                continue
    return addresses


def _spark_count(url: str) -> subprocess.CompletedProcess[str]:
    """One query through a fresh Spark Connect client (its own process: the session's client stays untouched)."""
    code = f"from pyspark.sql import SparkSession as S; print(S.builder.remote({url!r}).create().range(3).count())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def _mlflow_get(url: str, user: str | None = None, password: str | None = None) -> int:
    """The status of one API call to the stack's own loopback MLflow."""
    headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()} if user else {}
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(search, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _postgres_tcp(env: dict[str, str], keys: dict[str, str], up_stdout: str) -> None:
    import psycopg2

    port = int(env["LOOPLINE_POSTGRES_PORT"])
    home = Path(env["LOOPLINE_HOME"])
    postmaster = json.loads((home / "stack" / "postgres.json").read_text())
    assert _listening_addresses([postmaster["pid"]]) <= {"127.0.0.1", "::ffff:127.0.0.1"}
    assert f"127.0.0.1:{port}" in up_stdout
    assert "PG_ANALYST_PASSWORD" in up_stdout  # where the password is, never what it is
    for name in ("PG_OWNER_PASSWORD", "PG_LOADER_PASSWORD", "PG_ANALYST_PASSWORD"):
        assert keys[name] not in up_stdout

    def connect(user: str, password: str | None):
        return psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="loopline")

    for user, password in (
        ("loopline_analyst", "not-" + keys["PG_ANALYST_PASSWORD"]),
        ("loopline_analyst", keys["PG_LOADER_PASSWORD"]),  # another role's password
        ("loopline_owner", None),
        ("postgres", None),  # the superuser is trusted on the socket only
        ("postgres", keys["PG_OWNER_PASSWORD"]),
    ):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            connect(user, password).close()
    analyst = connect("loopline_analyst", keys["PG_ANALYST_PASSWORD"])
    try:
        with analyst.cursor() as cur:
            cur.execute("SELECT count(*) FROM loopline.latest_scores")
            assert cur.fetchone() == (0,)
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("DELETE FROM loopline.transaction_scores")
    finally:
        analyst.close()
    loader = connect("loopline_loader", keys["PG_LOADER_PASSWORD"])
    try:
        with loader.cursor() as cur:
            cur.execute("SELECT max(version) FROM loopline.schema_migrations")
            from loopline import db

            assert cur.fetchone() == (db.latest_version(),)  # `up` migrated, as the owner
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("CREATE TABLE loopline.mine (v int)")
    finally:
        loader.close()
    from loopline.stack import shell_environment

    # idempotent, on the running stack, also from a shell that sourced env.sh (it exports the stack's connection)
    migrate = _loopline(["migrate"], shell_environment(home, env))
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "nothing to apply" in migrate.stdout


def test_stack_up_status_down(tmp_path: Path):
    home = tmp_path / "home"
    env = stack_test_env(home)
    airflow_port = int(env["LOOPLINE_AIRFLOW_PORT"])
    spark_port = int(env["LOOPLINE__SPARK__CONNECT_URL"].rsplit(":", 1)[1])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        up = _loopline(["up"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        for component in ("airflow", "spark-connect", "postgres", "mlflow"):
            assert any(line.startswith(component) and "healthy" in line for line in up.stdout.splitlines()), up.stdout

        pid_files = sorted((home / "stack").glob("*.pid"))
        pids = [json.loads(p.read_text())["pid"] for p in pid_files]
        assert {p.stem for p in pid_files} == {
            "airflow-api-server",
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
            "spark-connect",
            "mlflow",
        }
        # Every socket the stack listens on is on loopback.
        addresses = _listening_addresses(pids)
        assert addresses, "the stack listens nowhere?"
        assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses

        # The UI answers on 127.0.0.1 and the API refuses anonymous calls.
        with urllib.request.urlopen(f"http://127.0.0.1:{airflow_port}/", timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{airflow_port}/api/v2/dags", timeout=10)
        assert denied.value.code in (401, 403)

        # The other services refuse anonymous clients too; the secrets are generated, private, on no command line.
        secrets_file = home / "stack" / "secrets.json"
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        keys = json.loads(secrets_file.read_text())
        mlflow = env["LOOPLINE__MLFLOW__UI_URL"]
        assert _mlflow_get(mlflow) == 401
        assert _mlflow_get(mlflow, "admin", "wrong") == 401
        assert _mlflow_get(mlflow, "admin", keys["MLFLOW_ADMIN_PASSWORD"]) == 200
        anonymous = _spark_count(f"sc://localhost:{spark_port}")
        assert anonymous.returncode != 0
        assert "UNAUTHENTICATED" in anonymous.stderr, anonymous.stderr[-2000:]
        wrong = _spark_count(f"sc://localhost:{spark_port}/;token=guess")
        assert wrong.returncode != 0
        assert "UNAUTHENTICATED" in wrong.stderr, wrong.stderr[-2000:]
        allowed = _spark_count(f"sc://localhost:{spark_port}/;token={keys['SPARK_TOKEN']}")
        assert allowed.stdout.strip() == "3", allowed.stderr[-2000:]
        command_lines = " ".join(" ".join(psutil.Process(pid).cmdline()) for pid in pids)
        for name in ("SPARK_TOKEN", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET"):
            assert keys[name] not in command_lines, f"{name} is on a command line"

        # PostgreSQL also listens on 127.0.0.1 for BI tools, with scram passwords; the roles are least privilege.
        _postgres_tcp(env, keys, up.stdout)

        # The dev connections reach the processes, filled in from the config.
        env_sh = (home / "stack" / "env.sh").read_text()
        assert f'"port": {spark_port}' in env_sh
        assert "AIRFLOW_CONN_LOOPLINE_POSTGRES" in env_sh
        assert '"login": "loopline_loader"' in env_sh  # tasks log in as the loader, not the superuser

        status = _loopline(["status"], env)
        assert status.returncode == 0, status.stdout + status.stderr

        again = _loopline(["up"], env)  # idempotent: nothing new is started
        assert again.returncode == 0, again.stdout + again.stderr
        assert "starting" not in again.stdout
        assert sorted(json.loads(p.read_text())["pid"] for p in pid_files) == sorted(pids)

        down = _loopline(["down"], env)
        assert down.returncode == 0, down.stdout + down.stderr
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert bystander.poll() is None, "down stopped a process it did not start"

        after = _loopline(["status"], env)
        assert after.returncode == 1
        assert "DOWN" in after.stdout
    finally:
        _loopline(["down"], env, timeout=120)
        bystander.kill()
