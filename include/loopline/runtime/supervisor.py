"""The process supervisor of the local stack: one detached process per component, a PID file with the start
time that proves the PID is still ours, a log per component, and the probes that say whether a service answers.

Everything lives under ``$LOOPLINE_HOME/stack`` (:func:`state_dir`). :func:`stop_process` signals only a
process this supervisor started (same PID *and* same kernel start time), never a PID reused by another.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from loopline.config import loopline_home

START_MARKER = "--- loopline: started"


@dataclass(frozen=True)
class Health:
    """One component's state as ``status`` reports it."""

    name: str
    healthy: bool
    detail: str


def state_dir() -> Path:
    """The folder holding PID files, logs and service data."""
    path = loopline_home() / "stack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def venv_bin() -> Path:
    """The folder of the running interpreter's console scripts (airflow, mlflow, spark-submit)."""
    return Path(sys.executable).parent


def spark_home() -> Path:
    """SPARK_HOME for the pip-installed pyspark (spark-submit needs it or the venv on PATH)."""
    import pyspark

    return Path(pyspark.__file__).parent


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """GET ``url``; healthy on a 2xx answer. Returns (ok, body or error)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL from config
            return 200 <= response.status < 300, response.read(2000).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return False, str(exc)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only the user can read (created that way, never briefly world-readable)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)


def _pid_file(name: str) -> Path:
    return state_dir() / f"{name}.pid"


def log_file(name: str) -> Path:
    path = state_dir() / "logs"
    path.mkdir(exist_ok=True)
    return path / f"{name}.log"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat): a PID reused later differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (field 3 of /proc/PID/stat): ``Z`` for a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def running_pid(name: str) -> int | None:
    """The PID ``up`` recorded for ``name`` if that very process (same start time) is still alive."""
    pid_file = _pid_file(name)
    if not pid_file.exists():
        return None
    record = json.loads(pid_file.read_text(encoding="utf-8"))
    pid = int(record["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    if Path("/proc").exists() and _start_time(pid) != record["started"]:
        return None  # the PID now belongs to some other process: never signal it
    if _state(pid) == "Z":
        return None  # killed, and its parent (init, once `up` has exited) has not reaped it yet
    return pid


def spawn(name: str, command: list[str], env: dict[str, str]) -> int:
    """Start ``command`` detached in its own session, logging to ``logs/<name>.log`` after a start marker
    (:func:`log_since_start` reads what this start wrote)."""
    log = log_file(name).open("ab")
    log.write(f"\n{START_MARKER} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    log.flush()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=str(loopline_home()),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    record = {"pid": process.pid, "started": _start_time(process.pid), "command": command}
    _pid_file(name).write_text(json.dumps(record))
    return process.pid


def log_since_start(name: str) -> str:
    """What the component's log holds since its last start by :func:`spawn`."""
    path = log_file(name)
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return text.rsplit(START_MARKER, 1)[-1]


def stop_process(name: str, grace: float = 30.0) -> bool:
    """Stop the process group ``up`` started for ``name``; returns whether anything was stopped."""
    pid = running_pid(name)
    _pid = _pid_file(name)
    if pid is None:
        _pid.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and running_pid(name):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # whatever ignored the polite signal, children included
    _pid.unlink(missing_ok=True)
    return True


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; on timeout raise with the tail of the component's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = ""
    if log and log.exists():
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
    raise RuntimeError(f"{what} did not become healthy within {timeout:.0f}s. Last log lines:\n{tail}")
