"""Airflow as a person runs it: `airflow standalone` on a loopback port (authentication on, SQLite),
one day triggered through the REST API, the next days through `airflow backfill create`, every
table compared with the same days run one by one, and the triggered run looked at in headless
Chromium. One Airflow for all of it: starting one and running a day through it are the costs."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pytest

from jobs.common.config import PROJECT_ROOT
from jobs.generate.cdrs import GeneratorSettings, generate
from tests.test_airflow import small_days_env

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TRIGGERED = date(2026, 11, 9)
# The suite backfills one day after the triggered one (each day is five spark-submits, ~5 min
# here); the week the issue asks for is CDR_BILLING_BACKFILL_DAYS=7 (README, "Backfills").
BACKFILLED = [TRIGGERED + timedelta(days=1 + offset) for offset in range(int(os.environ.get("CDR_BILLING_BACKFILL_DAYS", "1")))]
DAYS = [TRIGGERED, *BACKFILLED]
COMPARED = ["bronze/file_manifest", "silver/events", "silver/duplicates", "silver/quarantine", "silver/partial_records",
            "gold/rated_events", "gold/usage_assurance"]


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


def _snapshot(warehouse: Path, table: str) -> list:
    from deltalake import DeltaTable

    frame = DeltaTable(str(warehouse / table)).to_pandas()
    volatile = [c for c in ("run_id", "rated_at", "first_seen_at", "last_attempt_at", "ingested_at") if c in frame.columns]
    frame = frame.drop(columns=volatile)
    return sorted(map(repr, frame.to_dict("records")))


def _run_one_by_one(spark, base_conf, out: Path) -> None:
    from jobs import assure, collect, publish, rate, validate

    conf = base_conf.with_paths(warehouse=str(out / "one_by_one"), landing=str(out / "landing"),
                                reference=str(out / "reference"), reports=str(out / "reports_one_by_one"))
    conf = conf.model_copy(update={"validation": conf.validation.model_copy(update={"mostly": 0.8}),
                                   "assurance": conf.assurance.model_copy(update={"leakage_budget_pct": 100.0})})
    for day in DAYS:
        for stage in (collect, validate, rate, assure, publish):
            stage.run(spark, conf, day)


def _cdr_daily_runs(base: str, token: str) -> list[dict]:
    return _call(base, "GET", "/api/v2/dags/cdr_daily/dagRuns?limit=100", token)["dag_runs"]


def _create_backfill(airflow: dict[str, str], attempts: int = 3) -> subprocess.CompletedProcess:
    """`airflow backfill create` for the backfilled days, again as an operator would when SQLite
    refuses it with "database is locked" while the running scheduler writes (twice on this machine,
    despite the 120 s busy timeout; likely SQLite's refusal to wait when a reading transaction must
    become a writer, not confirmed)."""
    for attempt in range(1, attempts + 1):
        created = subprocess.run(
            [shutil.which("airflow", path=airflow["PATH"]) or "airflow", "backfill", "create", "--dag-id", "cdr_daily",
             "--from-date", BACKFILLED[0].isoformat(), "--to-date", BACKFILLED[-1].isoformat(), "--max-active-runs", "1"],
            env=airflow, capture_output=True, text=True, timeout=300)
        if created.returncode == 0 or "database is locked" not in created.stderr + created.stdout or attempt == attempts:
            return created
        time.sleep(10 * attempt)
    raise AssertionError("unreachable")


@pytest.mark.timeout(900 + 900 * len(DAYS))
def test_a_triggered_day_and_backfilled_days_equal_the_days_run_one_by_one(spark, base_conf, tmp_path):
    """Airflow's runs leave the same tables as the days run one after the other in process. The
    backfill runs one day at a time, oldest first (`--max-active-runs 1`: a day's duplicates and
    late records are judged against the days before it)."""
    out = tmp_path / "days"
    generate(GeneratorSettings(out=out, seed=17, subscribers=20, start=DAYS[0], days=len(DAYS), events_per_day=40))
    env = {**small_days_env(base_conf, out), "CDR_BILLING__PATHS__WAREHOUSE": str(out / "airflow")}
    _run_one_by_one(spark, base_conf, out)

    with _standalone(env, tmp_path / "airflow_home") as (base, user, password, log, airflow):
        token = _call(base, "POST", "/auth/token", body={"username": user, "password": password})["access_token"]
        _wait("the DAG to be parsed", lambda: _call(base, "GET", "/api/v2/dags/cdr_daily", token), 180)

        triggered = _call(base, "POST", "/api/v2/dags/cdr_daily/dagRuns", token,
                          {"logical_date": f"{TRIGGERED.isoformat()}T00:00:00Z", "conf": {}})["dag_run_id"]
        _call(base, "PATCH", "/api/v2/dags/cdr_daily", token, {"is_paused": False})

        def triggered_done():
            _fail_scheduled_runs(base, token, keep=lambda run: run["dag_run_id"] == triggered)
            state = _call(base, "GET", f"/api/v2/dags/cdr_daily/dagRuns/{triggered}", token)["state"]
            assert state != "failed", f"cdr_daily failed; see {log}"
            return state == "success"
        _wait("the triggered cdr_daily to succeed", triggered_done, 900, every_s=5)

        created = _create_backfill(airflow)
        assert created.returncode == 0, created.stdout + created.stderr

        def backfilled():
            _fail_scheduled_runs(base, token, keep=lambda run: run["run_type"] in ("backfill", "manual"))
            runs = [r for r in _cdr_daily_runs(base, token) if r["run_type"] == "backfill"]
            assert not [r for r in runs if r["state"] == "failed"], f"a backfill run failed; see {log}"
            return len(runs) == len(BACKFILLED) and all(r["state"] == "success" for r in runs) and runs
        runs = _wait("the backfill to succeed", backfilled, 900 * len(BACKFILLED), every_s=10)
        assert sorted(r["logical_date"][:10] for r in runs) == [d.isoformat() for d in BACKFILLED]
        _screenshot_of_the_run(base, user, password, triggered, tmp_path / "cdr_daily.png")

    for table in COMPARED:
        written = [(out / warehouse / table / "_delta_log").exists() for warehouse in ("airflow", "one_by_one")]
        assert written[0] == written[1], table
        if written[0]:
            assert _snapshot(out / "airflow", table) == _snapshot(out / "one_by_one", table), table
    assert len(_snapshot(out / "one_by_one", "gold/rated_events")) > 0


def _screenshot_of_the_run(base: str, user: str, password: str, run_id: str, shot: Path) -> None:
    """Log in to the UI as a person would and check that the DAG and its successful run are shown."""
    from playwright.sync_api import sync_playwright

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
        page.goto(base + f"/dags/cdr_daily/runs/{run_id}")
        page.get_by_text(run_id).first.wait_for(timeout=60_000)
        page.get_by_text("success", exact=False).first.wait_for(timeout=60_000)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    keep = PROJECT_ROOT / "build" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "cdr_daily_run.png")
