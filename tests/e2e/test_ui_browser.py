"""The Airflow UI in a real browser: headless Debian Chromium driven by Playwright against the real local stack.

Brings the stack up (``loopline up``) in a throwaway home and gives it a demo-like history (``tests.health_history``:
a week of scored days drifting from ``NIGHT`` on, a ``drift_monitor`` run per night in the stack's metadata
database, then a promotion), then logs in as a person would, checks that the six DAGs are listed without import
errors, opens the drift night's ``detect_drift`` task and follows its extra links to the MLflow run and the drift
report, and opens the model-health page: realized ROC AUC per day, the trigger night and the promotion marked.

With ``LOOPLINE_SCREENSHOTS=<folder>`` the DAG list and the health page are saved there (``docs/airflow-dags.png``
and ``docs/health-page.png`` come from this).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from loopline.stack import AirflowApi, admin_password, shell_environment
from tests.conftest import BIN, REPO, stack_test_env

# A stack, five drift_monitor nights and a browser: more than the default 900 s on a busy machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What a root, offline machine needs: no sandbox, and no background calls to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAG_IDS = ("backfill_range", "batch_score", "drift_monitor", "feature_pipeline", "promote_model", "train_model")
START = dt.date(2026, 1, 1)
DAYS = 6  # scored days; drift_monitor runs the nights from the second day on (within the cooldown of NIGHT)
NIGHT = dt.date(2026, 1, 5)  # the features drift from here on: the night that triggers retraining


def _run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium: `make test` installs Debian's package when it runs as root with apt-get")
    home = tmp_path_factory.mktemp("ui") / "home"
    env = stack_test_env(home)
    airflow_port = int(env["LOOPLINE_AIRFLOW_PORT"])
    try:
        up = _run([str(BIN / "loopline"), "up"], env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        stack_env = shell_environment(home, env)
        stack_env["PYTHONPATH"] = os.pathsep.join((str(REPO), str(REPO / "include")))  # this checkout's code
        # `airflow dags test` of Airflow 3.3.0 breaks on a successful run of a DAG with deadline alerts
        stack_env["LOOPLINE__ALERTS__LATENESS__ENABLED"] = "false"
        # A demo-like history through the loop's own code: a scored lake drifting from NIGHT on, drift_monitor
        # for each night (drift tests, realized performance, the retraining decision), then a promotion.
        history = _run(
            [
                str(BIN / "python"),
                "-m",
                "tests.health_history",
                "--start",
                str(START),
                "--days",
                str(DAYS),
                "--drift",
                str(NIGHT),
            ],
            stack_env,
            timeout=1500,
        )
        assert history.returncode == 0, history.stdout[-3000:] + history.stderr[-3000:]
        seeded = json.loads(history.stdout.strip().splitlines()[-1])
        assert set(seeded["nights"].values()) == {"success"}, seeded
        password = admin_password(home)
        secrets = json.loads((home / "stack" / "secrets.json").read_text())
        yield {
            "base": f"http://127.0.0.1:{airflow_port}",
            "mlflow": env["LOOPLINE__MLFLOW__UI_URL"],
            "password": password,
            "mlflow_password": secrets["MLFLOW_ADMIN_PASSWORD"],
            "home": home,
        }
    finally:
        _run([str(BIN / "loopline"), "down"], env, timeout=180)


def _api(ui: dict, path: str) -> dict:
    return AirflowApi(ui["base"], ui["home"]).request("GET", path)


def test_the_ui_lists_the_loop_and_links_a_task_to_mlflow_and_its_report(ui):
    from playwright.sync_api import expect, sync_playwright

    assert _api(ui, "/api/v2/importErrors")["total_entries"] == 0
    runs = _api(ui, "/api/v2/dags/drift_monitor/dagRuns")["dag_runs"]
    assert {run["state"] for run in runs} == {"success"}
    assert len(runs) == DAYS - 1
    (run_id,) = [run["dag_run_id"] for run in runs if run["logical_date"].startswith(str(NIGHT))]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # MLflow's basic auth answers the browser's challenge with its admin login, and only on its origin.
            mlflow_login = {"username": "admin", "password": ui["mlflow_password"], "origin": ui["mlflow"]}
            context = browser.new_context(viewport={"width": 1400, "height": 900}, http_credentials=mlflow_login)
            page = context.new_page()
            page.goto(f"{ui['base']}/")
            page.wait_for_url("**/auth/login**", timeout=30_000)  # the UI requires a login
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ui["password"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{ui['base']}/", timeout=30_000)

            page.goto(f"{ui['base']}/dags")
            expect(page.get_by_text(f"{len(DAG_IDS)} Dags")).to_be_visible(timeout=30_000)
            for dag_id in DAG_IDS:
                expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
            assert page.get_by_text("Import Errors").count() == 0
            if os.environ.get("LOOPLINE_SCREENSHOTS"):
                folder = Path(os.environ["LOOPLINE_SCREENSHOTS"])
                folder.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(folder / "airflow-dags.png"))

            quoted = urllib.parse.quote(run_id, safe="")
            page.goto(f"{ui['base']}/dags/drift_monitor/runs/{quoted}/tasks/detect_drift")
            page.get_by_text("Details", exact=True).click()
            mlflow = page.get_by_role("link", name="MLflow", exact=True)
            expect(mlflow).to_be_visible(timeout=30_000)
            assert mlflow.get_attribute("href").startswith(f"{ui['mlflow']}/#/experiments/")
            report = page.get_by_role("link", name="Validation report", exact=True)
            href = report.get_attribute("href")
            assert href == f"/loopline/reports/drift/ds={NIGHT}/report.html"

            # Both open: the MLflow run page and the report the plugin serves next to the UI.
            page.goto(mlflow.get_attribute("href"))
            expect(page.get_by_text("drift_monitor__2026-01-05").first).to_be_visible(timeout=30_000)
            page.goto(f"{ui['base']}{href}")
            expect(page.get_by_role("heading", name=f"Drift {NIGHT}", exact=False)).to_be_visible()
        finally:
            browser.close()


def test_the_model_health_page_shows_the_history_behind_the_login(ui):
    from playwright.sync_api import expect, sync_playwright

    from loopline import lineage
    from loopline.health import HEALTH_PREFIX

    url = f"{ui['base']}{HEALTH_PREFIX}/"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(url, timeout=30)  # noqa: S310 - a loopback URL of the test's own stack
    assert anonymous.value.code == 401

    # The night's lineage went to the stack's file transport (what `loopline up` configures).
    graph = lineage.LineageGraph.from_events(lineage.read_events(ui["home"] / "lineage" / "events.jsonl"))
    assert graph.jobs[lineage.analyst("loopline", "drift_reports", NIGHT).key] == {"drift_monitor.detect_drift"}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(f"{ui['base']}/")
            page.wait_for_url("**/auth/login**", timeout=30_000)
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ui["password"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{ui['base']}/", timeout=30_000)

            page.goto(url)
            expect(page.get_by_role("heading", name="Model health")).to_be_visible(timeout=30_000)
            for key in ("performance", "drift", "volumes", "scores", "champions"):
                # every chart of the history drawn by plotly.js
                expect(page.locator(f"#chart-{key} .main-svg").first).to_be_visible(timeout=30_000)
            summary = page.locator("#summary")
            expect(summary).to_contain_text(f"{DAYS - 1} monitored night(s)")
            expect(summary).to_contain_text(f"{DAYS} scored day(s)")
            expect(summary).to_contain_text(f"retraining triggered on {NIGHT}")  # the drift night, and only it
            # The trigger night marked on the drift chart, the later drifted nights held back by the cooldown.
            drift = page.locator("#chart-drift")
            expect(drift.locator(".legendtext").filter(has_text="retraining triggered")).to_have_count(1)
            # Realized ROC AUC per day once labels matured, with the model's holdout line.
            performance = page.locator("#chart-performance")
            expect(performance.locator(".legendtext").filter(has_text="realized ROC AUC")).to_have_count(1)
            expect(performance.locator(".legendtext").filter(has_text="holdout ROC AUC")).to_have_count(1)
            assert performance.locator(".scatterlayer .trace").first.locator(".point").count() >= 3
            # The champion history: the first champion and the promotion after the drift night.
            champions = page.locator("#chart-champions")
            expect(champions.locator(".legendtext").filter(has_text="promotion")).to_have_count(1)
            expect(champions.locator(".legendtext").filter(has_text="first")).to_have_count(1)
            if os.environ.get("LOOPLINE_SCREENSHOTS"):
                folder = Path(os.environ["LOOPLINE_SCREENSHOTS"])
                folder.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(folder / "health-page.png"), full_page=True)
        finally:
            browser.close()
