"""The real DAGs on generated data: `dag.test()` in process, then Airflow started as a person would,
cdr_daily triggered through the REST API, and its page looked at in headless Chromium."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from jobs.common.config import PROJECT_ROOT
from jobs.demo import airflow_env
from jobs.generate.cdrs import GeneratorSettings, generate

DAY = date(2026, 11, 2)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_world(tmp_path_factory, base_conf):
    """Generated data for one day and the environment the DAGs and their spark-submits run in."""
    out = tmp_path_factory.mktemp("airflow_world")
    generate(GeneratorSettings(out=out, seed=11, subscribers=30, start=DAY, days=1, events_per_day=120))
    # orchestration is what is tested here; the counters' 72 files a day are test_pipeline_e2e's
    shutil.rmtree(out / "landing" / "traffic")
    env = airflow_env(base_conf, out)
    # two planted leaks are most of so small a day's traffic; judged elsewhere (test_pipeline_e2e)
    env["CDR_BILLING__ASSURANCE__LEAKAGE_BUDGET_PCT"] = "100"
    env["CDR_BILLING__VALIDATION__MOSTLY"] = "0.8"
    env["CDR_BILLING__SPARK__SHUFFLE_PARTITIONS"] = "2"
    return out, env


def _snapshot(warehouse: Path, table: str) -> list:
    from deltalake import DeltaTable

    frame = DeltaTable(str(warehouse / table)).to_pandas()
    volatile = [c for c in ("run_id", "rated_at", "first_seen_at", "last_attempt_at", "ingested_at") if c in frame.columns]
    frame = frame.drop(columns=volatile)
    return sorted(map(repr, frame.to_dict("records")))


def test_dag_test_runs_cdr_daily_then_billing_cycle(airflow_world, monkeypatch):
    out, env = airflow_world
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(PROJECT_ROOT / "dags"))
    logical = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)
    run = bag.get_dag("cdr_daily").test(logical_date=logical)
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == dict.fromkeys(
        ["landing_files", "collect", "validate", "rate", "assure", "publish"], "success")
    billing = bag.get_dag("billing_cycle").test(logical_date=logical)
    assert billing.state == "success"

    from deltalake import DeltaTable

    warehouse = out / "warehouse"
    audit = DeltaTable(str(warehouse / "audit" / "pipeline_runs")).to_pandas()
    assert sorted(audit["job"]) == ["assure", "bill", "collect", "publish", "rate", "validate"]
    assert set(audit["status"]) == {"succeeded"}
    assert len(DeltaTable(str(warehouse / "gold" / "invoices")).to_pandas()) > 0
    assert len(DeltaTable(str(warehouse / "gold" / "usage_assurance")).to_pandas()) > 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _call(base: str, method: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _wait(what: str, check, timeout_s: float, every_s: float = 3.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:                      # not listening yet
            last = exc
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _fail_scheduled_runs(base: str, token: str, keep) -> None:
    """Unpausing cdr_daily also schedules the latest interval, whose sensor waits hours for files
    nobody will drop here: fail such runs so they hold no slot."""
    for run in _call(base, "GET", "/api/v2/dags/cdr_daily/dagRuns?limit=100", token)["dag_runs"]:
        if not keep(run) and run["state"] in ("queued", "running"):
            _call(base, "PATCH", f"/api/v2/dags/cdr_daily/dagRuns/{run['dag_run_id']}", token, {"state": "failed"})


@contextlib.contextmanager
def _standalone(env: dict[str, str], home: Path):
    """`airflow standalone` on a loopback port with its own home (authentication on, SQLite):
    yields (base URL, user, password, log path, environment)."""
    home.mkdir()                                    # a fresh metadata DB: standalone migrates it (seconds)
    port = _free_port()
    env = {**env, "AIRFLOW_HOME": str(home), "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    log_path = home.parent / "standalone.log"
    log = log_path.open("w")
    process = subprocess.Popen([shutil.which("airflow", path=env["PATH"]) or "airflow", "standalone"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait("the API server", lambda: _call(base, "GET", "/api/v2/monitor/health"), 240)
        passwords = home / "simple_auth_manager_passwords.json.generated"
        credentials = _wait("the generated admin password", lambda: passwords.exists() and json.loads(passwords.read_text()), 60)
        yield base, *next(iter(credentials.items())), log_path, env
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
        log.close()


@pytest.fixture
def standalone(airflow_world, tmp_path):
    with _standalone(airflow_world[1], tmp_path / "airflow_home") as running:
        yield running[:4]


def test_cdr_daily_triggered_through_the_rest_api_and_seen_in_chromium(airflow_world, standalone, tmp_path):
    out, _ = airflow_world
    base, user, password, log = standalone
    token = _call(base, "POST", "/auth/token", body={"username": user, "password": password})["access_token"]
    _wait("the DAG to be parsed", lambda: _call(base, "GET", "/api/v2/dags/cdr_daily", token), 180)
    warehouse = out / "warehouse"
    tables = ["silver/events", "silver/quarantine", "gold/rated_events", "gold/usage_assurance"]
    before = {t: _snapshot(warehouse, t) for t in tables} if (warehouse / "gold" / "rated_events").exists() else None

    ours = _call(base, "POST", "/api/v2/dags/cdr_daily/dagRuns", token,
                 {"logical_date": f"{DAY.isoformat()}T00:00:00Z", "conf": {}})["dag_run_id"]
    _call(base, "PATCH", "/api/v2/dags/cdr_daily", token, {"is_paused": False})

    def finished():
        _fail_scheduled_runs(base, token, keep=lambda run: run["dag_run_id"] == ours)
        state = _call(base, "GET", f"/api/v2/dags/cdr_daily/dagRuns/{ours}", token)["state"]
        assert state != "failed", f"cdr_daily failed; see {log}"
        return state == "success"

    _wait("cdr_daily to succeed", finished, 900, every_s=5)
    if before is not None:                          # a rerun through Airflow leaves every table as it was
        assert {t: _snapshot(warehouse, t) for t in tables} == before

    from playwright.sync_api import sync_playwright

    shot = tmp_path / "cdr_daily.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/dags/cdr_daily")
        page.locator("input[type=password]").wait_for(timeout=60_000)        # the login form
        page.locator("input:not([type=password])").first.fill(user)
        page.locator("input[type=password]").fill(password)
        page.locator("button[type=submit]").click()
        page.wait_for_url("**/dags/cdr_daily**", timeout=60_000)
        page.get_by_text("cdr_daily").first.wait_for(timeout=60_000)
        page.goto(base + f"/dags/cdr_daily/runs/{ours}")
        page.get_by_text(ours).first.wait_for(timeout=60_000)
        page.get_by_text("success", exact=False).first.wait_for(timeout=60_000)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    keep = PROJECT_ROOT / "build" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "cdr_daily_run.png")

