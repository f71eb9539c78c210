"""Airflow as a person runs it: `airflow standalone` on a loopback port (authentication on, SQLite),
one day triggered through the REST API, the next days through `airflow backfill create`, every
table compared with the same days run one by one, and the triggered run looked at in headless
Chromium; then `dag.test()` of `billing_cycle` bills what Airflow rated, as a bill run in process
bills the days run one by one. One Airflow for all of it: starting one and running a day through
it are the costs (every task is a spark-submit, a fresh JVM). `cdr_daily` runs through the
scheduler, not also through `dag.test()`: the same tasks again would only repeat those JVMs."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from jobs.common.config import PROJECT_ROOT
from jobs.demo import airflow_env
from jobs.generate.cdrs import GeneratorSettings, generate
from tests.conftest import comparable_columns

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TRIGGERED = date(2026, 11, 9)
# The suite backfills one day after the triggered one (each day is five spark-submits, ~5 min
# here); the week the issue asks for is CDR_BILLING_BACKFILL_DAYS=7 (README, "Backfills").
BACKFILLED = [TRIGGERED + timedelta(days=1 + offset) for offset in range(int(os.environ.get("CDR_BILLING_BACKFILL_DAYS", "1")))]
DAYS = [TRIGGERED, *BACKFILLED]
COMPARED = ["bronze/file_manifest", "silver/events", "silver/duplicates", "silver/quarantine", "silver/partial_records",
            "gold/rated_events", "gold/usage_assurance"]
BILLED = BACKFILLED[-1]               # closes the accounts whose cycle day it is: the earlier days' usage
BILL_TABLES = ["gold/invoices", "gold/invoice_lines", "gold/invoice_line_events", "gold/tax_summary"]

# two planted leaks are most of so small a day's traffic, judged elsewhere (test_pipeline_e2e);
# and so are its planted bad records
SMALL_DAYS = {"CDR_BILLING__ASSURANCE__LEAKAGE_BUDGET_PCT": "100", "CDR_BILLING__VALIDATION__MOSTLY": "0.8",
              "CDR_BILLING__SPARK__SHUFFLE_PARTITIONS": "2"}


def small_days_env(base_conf, out) -> dict[str, str]:
    """The environment the DAGs and their spark-submits run in, for generated days under `out`."""
    # orchestration is what is tested here; the counters' 72 files a day are test_pipeline_e2e's
    shutil.rmtree(out / "landing" / "traffic")
    return {**airflow_env(base_conf, out), **SMALL_DAYS}


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
        stop_process_group(process, grace_s=60)
        log.close()


def stop_process_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the group `process` leads, then SIGKILL to whatever of it is left after `grace_s`:
    standalone exits on SIGTERM while its scheduler can hang in its own shutdown (a clean clone's
    suite left one running, 2026-12-07), so the leader's exit alone does not end the group."""
    os.killpg(process.pid, 15)
    deadline = time.monotonic() + grace_s
    # the leader is among the members until it exits (then a zombie until reaped below)
    while time.monotonic() < deadline and live_group_members(process.pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 9)
    process.wait()


def live_group_members(pgid: int) -> list[int]:
    """Processes of the group still running (zombies excluded: this VM's init does not reap them)."""
    import psutil

    members = []
    for candidate in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(candidate.pid) == pgid and candidate.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(candidate.pid)
    return members


def test_stopping_standalone_ends_children_that_ignore_sigterm():
    # the leader exits on SIGTERM; its child ignores it, as a hung scheduler does
    leader = subprocess.Popen(["sh", "-c", "(trap '' TERM; sleep 300) & sleep 300"], start_new_session=True)
    time.sleep(0.5)
    stop_process_group(leader, grace_s=2)
    time.sleep(0.2)                                 # the orphan's SIGKILL is delivered
    assert live_group_members(leader.pid) == []


def _snapshot(warehouse: Path, table: str) -> list:
    from deltalake import DeltaTable

    frame = DeltaTable(str(warehouse / table)).to_pandas()
    return sorted(map(repr, frame[comparable_columns(frame.columns)].to_dict("records")))


def _assert_same_tables(out: Path, tables: list[str]) -> None:
    for table in tables:
        written = [(out / warehouse / table / "_delta_log").exists() for warehouse in ("airflow", "one_by_one")]
        assert written[0] == written[1], table
        if written[0]:
            assert _snapshot(out / "airflow", table) == _snapshot(out / "one_by_one", table), table


def _one_by_one_conf(base_conf, out: Path):
    conf = base_conf.with_paths(warehouse=str(out / "one_by_one"), landing=str(out / "landing"),
                                reference=str(out / "reference"), reports=str(out / "reports_one_by_one"))
    return conf.model_copy(update={"validation": conf.validation.model_copy(update={"mostly": 0.8}),
                                   "assurance": conf.assurance.model_copy(update={"leakage_budget_pct": 100.0})})


def _run_one_by_one(spark, conf) -> None:
    from jobs import assure, collect, publish, rate, validate

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


@pytest.fixture(scope="module")
def airflow_days(spark, base_conf, tmp_path_factory):
    """The days run by Airflow (a triggered day, then the backfill) into `airflow/`, and one by one
    in process into `one_by_one/`: returns the folder holding both and the tasks' environment."""
    tmp_path = tmp_path_factory.mktemp("airflow_days")
    out = tmp_path / "days"
    generate(GeneratorSettings(out=out, seed=17, subscribers=20, start=DAYS[0], days=len(DAYS), events_per_day=40))
    env = {**small_days_env(base_conf, out), "CDR_BILLING__PATHS__WAREHOUSE": str(out / "airflow")}
    _run_one_by_one(spark, _one_by_one_conf(base_conf, out))

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
    return out, env


# the module's Airflow run (~10 min here) is set up by whichever of its tests runs first
AIRFLOW_RUN_TIMEOUT = pytest.mark.timeout(900 + 900 * len(DAYS))


@AIRFLOW_RUN_TIMEOUT
def test_a_triggered_day_and_backfilled_days_equal_the_days_run_one_by_one(airflow_days):
    """Airflow's runs leave the same tables as the days run one after the other in process. The
    backfill runs one day at a time, oldest first (`--max-active-runs 1`: a day's duplicates and
    late records are judged against the days before it)."""
    out, _ = airflow_days
    _assert_same_tables(out, COMPARED)
    assert len(_snapshot(out / "one_by_one", "gold/rated_events")) > 0


@AIRFLOW_RUN_TIMEOUT
def test_dag_test_of_billing_cycle_bills_what_airflow_rated_as_a_bill_run_in_process_does(
        spark, base_conf, airflow_days, monkeypatch):
    """`billing_cycle` through `dag.test()` (its bill task a real spark-submit) on the warehouse
    Airflow filled. Its sensor waits for `cdr_daily`'s `rate` in this process's metadata DB,
    where that DAG never ran (it ran in the standalone's), so `dag.test` marks it done."""
    from jobs import bill

    out, env = airflow_days
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag

    billing = DagBag(str(PROJECT_ROOT / "dags")).get_dag("billing_cycle").test(
        logical_date=datetime(BILLED.year, BILLED.month, BILLED.day, tzinfo=timezone.utc),
        mark_success_pattern="^usage_rated$")
    assert billing.state == "success", [(ti.task_id, ti.state) for ti in billing.get_task_instances()]
    assert bill.run(spark, _one_by_one_conf(base_conf, out), BILLED).details["invoices"] > 0
    _assert_same_tables(out, BILL_TABLES)

    from deltalake import DeltaTable

    audit = DeltaTable(str(out / "airflow" / "audit" / "pipeline_runs")).to_pandas()
    assert sorted(audit["job"]) == sorted(["assure", "collect", "publish", "rate", "validate"] * len(DAYS) + ["bill"])
    assert set(audit["status"]) == {"succeeded"}


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
