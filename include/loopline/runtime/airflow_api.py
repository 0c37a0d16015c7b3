"""A client of the local Airflow's REST API (``/api/v2``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from loopline.config import loopline_home
from loopline.runtime.airflow_components import AIRFLOW_PORT, admin_password


class AirflowApi:
    """The local Airflow's REST API (``/api/v2``) as the ``admin`` user.

    What the demo asks many times (the state of runs) goes here, not to the CLI: each ``airflow`` CLI
    process costs CPU seconds of imports, which a 2-core machine otherwise spends on the backfill it watches.
    """

    READ_ATTEMPTS = 3  # a GET that times out is asked this many times in all

    def __init__(
        self,
        base: str | None = None,
        home: Path | None = None,
        timeout: float = 30.0,
        *,
        user: str = "admin",
        password: str | None = None,
    ) -> None:
        self.base = (base or f"http://127.0.0.1:{AIRFLOW_PORT}").rstrip("/")
        self.home = home
        self._token: str | None = None
        self.timeout = timeout
        self.user, self.password = user, password  # default: admin, with the stack's generated password

    @classmethod
    def for_env(cls, env: dict[str, str]) -> AirflowApi:
        """The API of the stack that ``env`` (a ``stack_environment``) talks to."""
        port = env.get("LOOPLINE_AIRFLOW_PORT") or str(AIRFLOW_PORT)
        home = Path(env["LOOPLINE_HOME"]) if env.get("LOOPLINE_HOME") else None
        return cls(f"http://127.0.0.1:{port}", home)

    def _login(self) -> str:
        password = self.password or admin_password(self.home)
        if password is None:
            raise RuntimeError(
                f"no admin password under {(self.home or loopline_home()) / 'airflow'}: is the stack up?"
            )
        body = json.dumps({"username": self.user, "password": password}).encode()
        request = urllib.request.Request(  # noqa: S310 - the stack's own loopback server
            f"{self.base}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return json.loads(response.read())["access_token"]

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call; a read that times out (an API server busy on a loaded machine) is asked again, up to
        ``READ_ATTEMPTS`` times; a write never is, since it may have been applied."""
        for attempt in range(1, self.READ_ATTEMPTS + 1):
            try:
                return self._request(method, path, body)
            except TimeoutError:
                if method != "GET" or attempt == self.READ_ATTEMPTS:
                    raise
                time.sleep(attempt)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call; logs in first, and again once if the token has expired."""
        for attempt in (1, 2):
            self._token = self._token or self._login()
            request = urllib.request.Request(  # noqa: S310 - loopback
                f"{self.base}{path}",
                method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1:
                    self._token = None
                    continue
                detail = exc.read().decode(errors="replace")[:500]
                raise RuntimeError(f"Airflow API {method} {path}: HTTP {exc.code} {detail}") from exc
        raise AssertionError("unreachable")

    def dag_runs(self, dag_id: str) -> list[dict]:
        """Every run of ``dag_id`` (all pages), each with ``run_id`` as the CLI names it."""
        runs: list[dict] = []
        while True:
            page = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&offset={len(runs)}&order_by=id")
            runs += [{**run, "run_id": run["dag_run_id"]} for run in page["dag_runs"]]
            if not page["dag_runs"] or len(runs) >= page["total_entries"]:
                return runs

    def dag_ids(self) -> set[str]:
        """The DAGs the dag-processor has parsed (the first 100, more than this project has)."""
        return {dag["dag_id"] for dag in self.request("GET", "/api/v2/dags?limit=100")["dags"]}

    def dag(self, dag_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{dag_id}")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def pending_approvals(self, dag_id: str) -> list[dict]:
        """Human-in-the-loop tasks of ``dag_id`` waiting for an answer (the UI's Required actions).

        Only tasks already parked in ``awaiting_input``: an answer recorded while the task is still writing its
        request is stored but does not resume it."""
        page = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails?limit=100")
        return [
            detail
            for detail in page["hitl_details"]
            if not detail.get("response_received")
            and (detail.get("task_instance") or {}).get("state") == "awaiting_input"
        ]

    def answer(self, detail: dict, option: str) -> dict:
        """Answer one human-in-the-loop task (``Approve`` / ``Reject`` for an approval) as this API's user."""
        ti = detail["task_instance"]
        path = (
            f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
            f"{ti.get('map_index', -1)}/hitlDetails"
        )
        return self.request("PATCH", path, {"chosen_options": [option]})

    def open_backfill(self, dag_id: str) -> int | None:
        """The id of ``dag_id``'s newest backfill that has not completed, or None."""
        # newest first: a stack that has run many demos keeps every completed backfill
        page = self.request("GET", f"/api/v2/backfills?dag_id={dag_id}&order_by=-id&limit=100")
        open_ = [b["id"] for b in page["backfills"] if not b.get("completed_at")]
        return max(open_) if open_ else None

    def pause_backfill(self, backfill_id: int, paused: bool = True) -> None:
        """Pause (no queued run of it starts) or resume a backfill; its running runs go on."""
        self.request("PUT", f"/api/v2/backfills/{backfill_id}/{'pause' if paused else 'unpause'}")

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> None:
        """A manual run now (no logical date, as ``airflow dags trigger`` makes in Airflow 3)."""
        self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        )
