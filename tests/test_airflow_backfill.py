"""`airflow backfill create` through a running scheduler against the same days run one by one.

Its own module so that pytest-xdist (--dist loadfile) can run it beside test_airflow.py's tests."""
from __future__ import annotations

import os
import shutil
import subprocess
from datetime import date, timedelta

import pytest

from jobs.demo import airflow_env
from jobs.generate.cdrs import GeneratorSettings, generate
from tests.test_airflow import _call, _fail_scheduled_runs, _snapshot, _standalone, _wait

pytestmark = pytest.mark.slow


# The suite backfills two days (each day is five spark-submits, ~5 min here); the week the issue
# asks for is the same test with CDR_BILLING_BACKFILL_DAYS=7 (README, "Backfills").
BACKFILL_DAYS = [date(2026, 11, 9) + timedelta(days=offset)
                 for offset in range(int(os.environ.get("CDR_BILLING_BACKFILL_DAYS", "2")))]
COMPARED = ["bronze/file_manifest", "silver/events", "silver/duplicates", "silver/quarantine", "silver/partial_records",
            "gold/rated_events", "gold/usage_assurance"]


@pytest.mark.timeout(600 + 900 * len(BACKFILL_DAYS))
def test_days_backfilled_by_airflow_equal_the_days_run_one_by_one(spark, base_conf, tmp_path):
    """`airflow backfill create` over several days (the scheduler running the real DAG, one run at a time:
    a day's duplicates and late records are judged against the days before it) leaves the same
    tables as running the days one after the other."""
    out = tmp_path / "days"
    generate(GeneratorSettings(out=out, seed=17, subscribers=20, start=BACKFILL_DAYS[0], days=len(BACKFILL_DAYS), events_per_day=40))
    shutil.rmtree(out / "landing" / "traffic")
    env = airflow_env(base_conf, out)
    env.update({"CDR_BILLING__ASSURANCE__LEAKAGE_BUDGET_PCT": "100", "CDR_BILLING__VALIDATION__MOSTLY": "0.8",
                "CDR_BILLING__SPARK__SHUFFLE_PARTITIONS": "2",
                "CDR_BILLING__PATHS__WAREHOUSE": str(out / "backfilled")})

    from jobs import assure, collect, publish, rate, validate

    one_by_one = base_conf.with_paths(warehouse=str(out / "one_by_one"), landing=str(out / "landing"),
                                      reference=str(out / "reference"), reports=str(out / "reports_one_by_one"))
    one_by_one = one_by_one.model_copy(update={
        "validation": one_by_one.validation.model_copy(update={"mostly": 0.8}),
        "assurance": one_by_one.assurance.model_copy(update={"leakage_budget_pct": 100.0})})
    for day in BACKFILL_DAYS:
        for stage in (collect, validate, rate, assure, publish):
            stage.run(spark, one_by_one, day)

    with _standalone(env, tmp_path / "airflow_home") as (base, user, password, log, airflow):
        token = _call(base, "POST", "/auth/token", body={"username": user, "password": password})["access_token"]
        _wait("the DAG to be parsed", lambda: _call(base, "GET", "/api/v2/dags/cdr_daily", token), 180)
        # one run at a time, oldest first: the backfill's own limit, independent of the DAG's
        created = subprocess.run(
            [shutil.which("airflow", path=airflow["PATH"]) or "airflow", "backfill", "create", "--dag-id", "cdr_daily",
             "--from-date", BACKFILL_DAYS[0].isoformat(), "--to-date", BACKFILL_DAYS[-1].isoformat(), "--max-active-runs", "1"],
            env=airflow, capture_output=True, text=True, timeout=300)
        assert created.returncode == 0, created.stdout + created.stderr
        # Airflow 3.3 leaves a paused DAG's backfill runs queued
        _call(base, "PATCH", "/api/v2/dags/cdr_daily", token, {"is_paused": False})

        def backfilled():
            _fail_scheduled_runs(base, token, keep=lambda run: run["run_type"] == "backfill")
            runs = [r for r in _call(base, "GET", "/api/v2/dags/cdr_daily/dagRuns?limit=100", token)["dag_runs"]
                    if r["run_type"] == "backfill"]
            assert not [r for r in runs if r["state"] == "failed"], f"a backfill run failed; see {log}"
            return len(runs) == len(BACKFILL_DAYS) and all(r["state"] == "success" for r in runs) and runs
        runs = _wait("the backfill to succeed", backfilled, 600 * len(BACKFILL_DAYS), every_s=10)
        assert sorted(r["logical_date"][:10] for r in runs) == [d.isoformat() for d in BACKFILL_DAYS]

    for table in COMPARED:
        written = [(out / warehouse / table / "_delta_log").exists() for warehouse in ("backfilled", "one_by_one")]
        assert written[0] == written[1], table
        if written[0]:
            assert _snapshot(out / "backfilled", table) == _snapshot(out / "one_by_one", table), table
    assert len(_snapshot(out / "one_by_one", "gold/rated_events")) > 0
