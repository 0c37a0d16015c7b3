"""The built wheel works on its own: installed into a fresh virtual environment (its dependencies seen from this
one's site-packages, never this checkout's sources), ``loopline --help`` runs and the DAG folder parses against
the installed package, which finds its migrations, GX suites and settings files inside itself."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

EXPECTED_DAGS = {
    "backfill_range",
    "batch_score",
    "drift_monitor",
    "feature_pipeline",
    "promote_model",
    "train_model",
}

# Run inside the fresh environment: where the package came from, its data, and a parse of the DAG folder.
PROBE = """
import json, sys
import loopline
from loopline import cluster, db, stack, validation
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "package": loopline.__file__,
    "migrations": [path.name for path in db.migration_files()],
    "suites": validation.suite_names(),
    "settings": [str(p) for p in (stack.DEV_ENV_FILE, cluster.SERVICES_ENV, cluster.CLUSTER_ENV) if p.is_file()],
    "dags": sorted(bag.dag_ids),
    "errors": {path: str(error)[:300] for path, error in bag.import_errors.items()},
}))
"""


def _run(command: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[:3]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the build writes ``build/`` and ``*.egg-info`` there)."""
    source = tmp_path_factory.mktemp("wheel-source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("include", "spark_jobs"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."]
    _run(command, dict(os.environ), source)
    (built,) = out.glob("loopline-*.whl")
    return built


def test_the_wheel_carries_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = sorted(path.name for path in (REPO / "include" / "sql").glob("V*.sql"))
    suites = sorted(path.name for path in (REPO / "include" / "gx").glob("*.json"))
    assert {f"loopline/sql/{name}" for name in migrations} <= names
    assert {f"loopline/gx/{name}" for name in suites} <= names
    assert {"loopline/config/loopline.yaml", "loopline/config/dev/airflow.env", "loopline/config/services.env"} <= names
    assert {"loopline/drift/__init__.py", "loopline/runtime/supervisor.py", "spark_jobs/score.py"} <= names


def test_the_installed_wheel_runs_the_cli_and_parses_the_dags(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], dict(os.environ), tmp_path)
    (purelib,) = (venv / "lib").glob("python*/site-packages")
    # The dependencies come from this environment's site-packages; the .pth files there (this checkout's
    # editable install among them) are not read, so `loopline` can only come from the wheel.
    (purelib / "shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # This environment's pip installs into the fresh one (scripts point at its interpreter); nothing is fetched.
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "--no-input"]
    _run([*pip, "install", "--no-deps", "--no-index", "-q", str(wheel)], dict(os.environ), tmp_path)

    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("AIRFLOW")
    }
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "LOOPLINE_HOME": str(tmp_path / "home"),
        }
    )
    python = str(venv / "bin" / "python")
    help_text = _run([str(venv / "bin" / "loopline"), "--help"], env, tmp_path)
    commands = set(re.search(r"\{([a-z,-]+)\}", help_text).group(1).split(","))  # argparse's choices
    assert {"up", "down", "demo", "migrate"} <= commands, help_text

    report = json.loads(_run([python, "-c", PROBE, str(REPO / "dags")], env, tmp_path, timeout=400).splitlines()[-1])
    assert Path(report["package"]).is_relative_to(venv), report["package"]
    assert report["migrations"] == sorted(path.name for path in (REPO / "include" / "sql").glob("V*.sql"))
    assert report["suites"] == sorted(path.stem for path in (REPO / "include" / "gx").glob("*.json"))
    assert len(report["settings"]) == 3
    assert report["errors"] == {}
    assert set(report["dags"]) == EXPECTED_DAGS
