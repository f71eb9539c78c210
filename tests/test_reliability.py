"""Faults, races and bad settings: a killed or doubled run loses nothing, a bad setting writes nothing.

The crash tests SIGKILL a real `cdr-billing` driver process (jobs/common/failpoints.py) in the
middle of a Delta MERGE, then rerun the same command the way an operator would and compare every
table with a run that was never interrupted. The cluster test runs the daily run and a bill run
on a Spark standalone master and worker started on loopback from the pip-installed Spark.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest

from jobs import bill, collect, rate, validate
from jobs.cli import main as cli
from jobs.common.config import PROJECT_ROOT
from jobs.common.delta_io import read_table, table_exists
from jobs.common.run_lock import RunLocked, run_lock
from jobs.generate.cdrs import GeneratorSettings, generate
from tests.conftest import comparable_columns
from tests.threads import run_together

DAY = date(2026, 11, 2)
BILL_DATE = DAY + timedelta(days=1)
DAILY_TABLES = [("bronze", "file_manifest"), ("bronze", "cdr_voice"), ("bronze", "cdr_sms"), ("bronze", "cdr_data"),
                ("bronze", "cdr_asterisk"), ("silver", "events"), ("silver", "quarantine"), ("silver", "duplicates"),
                ("silver", "record_keys"), ("silver", "partial_records"), ("gold", "rated_events")]
BILL_TABLES = [("gold", "invoices"), ("gold", "invoice_lines"), ("gold", "invoice_line_events"), ("gold", "tax_summary")]


def contents(spark, conf, layer: str, table: str) -> list[tuple]:
    path = conf.table_path(layer, table)
    if not table_exists(spark, path):
        return []
    frame = read_table(spark, path)
    return sorted(tuple(str(v) for v in row) for row in frame.select(*comparable_columns(frame.columns)).collect())


def env_for(conf) -> dict[str, str]:
    return {"CDR_BILLING__PATHS__WAREHOUSE": conf.paths.warehouse, "CDR_BILLING__PATHS__LANDING": conf.paths.landing,
            "CDR_BILLING__PATHS__REFERENCE": conf.paths.reference, "CDR_BILLING__PATHS__REPORTS": conf.paths.reports,
            "CDR_BILLING__VALIDATION__MOSTLY": str(conf.validation.mostly),
            "CDR_BILLING__SPARK__MASTER": "local[2]", "CDR_BILLING__SPARK__SHUFFLE_PARTITIONS": "2"}


def cdr_billing(conf, *args: str, kill_at: str | None = None, **settings: str) -> subprocess.CompletedProcess:
    """`cdr-billing ARGS` as its own driver process (its own JVM), as Airflow or a person runs it."""
    env = {**os.environ, **env_for(conf), "CDR_BILLING__SPARK__SHORT_RUNS": "true", **settings}
    env.pop("CDR_BILLING_KILL_AT", None)
    if kill_at:
        env["CDR_BILLING_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def world(spark, base_conf, tmp_path_factory):
    """Generated data and an uninterrupted reference run: collect, validate, rate, then a bill run;
    and a copy of its warehouse as validate left it, for the runs that start from there."""
    root = tmp_path_factory.mktemp("reliability")
    generate(GeneratorSettings(out=root / "data", seed=3, subscribers=40, start=DAY, days=1, events_per_day=150))
    conf = base_conf.with_paths(landing=str(root / "data" / "landing"), reference=str(root / "data" / "reference"),
                                warehouse=str(root / "reference-run"), reports=str(root / "reports"))
    conf = conf.model_copy(update={"validation": conf.validation.model_copy(update={"mostly": 0.8})})
    for stage in (collect, validate):
        stage.run(spark, conf, DAY)
    shutil.copytree(conf.paths.warehouse, root / "validated")
    rate.run(spark, conf, DAY)
    billed = bill.run(spark, conf, BILL_DATE)
    assert billed.details["invoices"] > 0
    return {"root": root, "conf": conf,
            "daily": {t: contents(spark, conf, *t) for t in DAILY_TABLES},
            "bill": {t: contents(spark, conf, *t) for t in BILL_TABLES}}


def _in_process(monkeypatch, conf, *args: str) -> int:
    for key, value in env_for(conf).items():
        monkeypatch.setenv(key, value)
    return cli(list(args))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_driver_killed_during_the_rating_merge_and_the_bill_run_loses_and_doubles_nothing(
        spark, world, monkeypatch, capfd):
    """Each crash is a real driver killed mid-MERGE, then the operator's rerun of the same command.
    The day's rating starts from the reference run's validated warehouse: collect and validate
    again in the killed driver would only add their seconds (their reruns: test_pipeline_e2e)."""
    conf = world["conf"].with_paths(warehouse=str(world["root"] / "crashed"))
    shutil.copytree(world["root"] / "validated", conf.paths.warehouse)

    killed = cdr_billing(conf, "run-day", "--date", DAY.isoformat(), "--stages", "rate",
                         kill_at="merge:gold/rated_events@0.5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert contents(spark, conf, "gold", "rated_events") != world["daily"][("gold", "rated_events")]
    # the operator reruns the same command; the dead run's lock is taken over (its process is gone)
    assert _in_process(monkeypatch, conf, "run-day", "--date", DAY.isoformat(), "--stages", "rate") == 0
    for table in DAILY_TABLES:
        assert contents(spark, conf, *table) == world["daily"][table], table

    # killed between the invoice lines and the headers that issue them
    killed = cdr_billing(conf, "bill", "--run-date", BILL_DATE.isoformat(), kill_at="merge:gold/invoices")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert contents(spark, conf, "gold", "invoice_lines") and not contents(spark, conf, "gold", "invoices")
    assert _in_process(monkeypatch, conf, "bill", "--run-date", BILL_DATE.isoformat()) == 0
    for table in BILL_TABLES:
        assert contents(spark, conf, *table) == world["bill"][table], table
    assert read_table(spark, conf.table_path("audit", "run_locks")).count() == 0

    # personal data: no subscriber number in any gold or audit table, nor in what the runs printed
    numbers = _subscriber_numbers(world["root"])
    printed = killed.stdout + killed.stderr + capfd.readouterr().out
    for layer in ("gold", "audit"):
        for table in sorted(p.name for p in (Path(conf.paths.warehouse) / layer).iterdir()):
            text = "\n".join(" ".join(row) for row in contents(spark, conf, layer, table))
            assert not [n for n in numbers if n in text], f"{layer}/{table} carries raw numbers"
    assert not [n for n in numbers if n in printed]


def _subscriber_numbers(root: Path) -> set[str]:
    import csv

    with (root / "data" / "reference" / "subscribers.csv").open() as handle:
        return {row["msisdn"] for row in csv.DictReader(handle)}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_runs_of_the_same_day_at_once_give_the_tables_of_one_run(spark, world, monkeypatch, capsys):
    """Two `run-day` commands for one date started together (threads of one driver here, so
    that the race is tight; the lock is the same one separate processes meet)."""
    conf = world["conf"].with_paths(warehouse=str(world["root"] / "concurrent"))
    for key, value in env_for(conf).items():
        monkeypatch.setenv(key, value)
    codes, start = [], threading.Barrier(2)

    def run() -> None:
        start.wait()
        codes.append(cli(["run-day", "--date", DAY.isoformat(), "--stages", "collect,validate,rate"]))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # one ran; the other found the lock held and said so (exit 3), or came after it had finished
    assert sorted(codes) in ([0, 3], [0, 0]), codes
    if sorted(codes) == [0, 3]:
        assert f"error: run-day {DAY} is already running (pid" in capsys.readouterr().err
    for table in DAILY_TABLES:
        assert contents(spark, conf, *table) == world["daily"][table], table


def test_the_run_lock_admits_one_of_two_racing_runs(spark, conf):
    entered, refused, errors = [], [], []
    start, loser_done = threading.Barrier(2), threading.Event()

    def contend() -> None:
        start.wait()
        try:
            with run_lock(spark, conf, "run-day 2026-11-02"):
                entered.append(1)
                loser_done.wait(timeout=120)          # hold the lock until the other run has tried
        except RunLocked as exc:
            refused.append(str(exc))
            loser_done.set()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc)[:2000])
            loser_done.set()

    threads = [threading.Thread(target=contend) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(entered) == 1 and len(refused) == 1 and "already running" in refused[0], errors
    with run_lock(spark, conf, "run-day 2026-11-02"):              # released: the next run gets it
        pass


def test_runs_checking_the_warehouse_together_all_pass_and_leave_nothing_behind(spark, conf):
    """Two runs started together preflight the same warehouse at once: neither may trip over the
    other's probe (CI once failed a run-day with chmod on the other run's .crc file)."""
    from jobs.common.preflight import check_warehouse

    Path(conf.paths.warehouse).mkdir(parents=True)

    def check() -> None:
        for _ in range(25):
            check_warehouse(spark, conf)

    errors = run_together(check, threads=4)
    assert not errors, errors
    assert not list(Path(conf.paths.warehouse).iterdir())


def test_a_lock_left_by_a_dead_process_is_taken_over(spark, conf):
    import socket
    from datetime import datetime

    from jobs.common.delta_io import merge
    from schemas.tables import RUN_LOCKS

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = (("bill 2026-11-03", "t0", socket.gethostname(), int(dead.stdout), datetime(2026, 11, 3, 1, 0)),
             ("bill 2026-11-04", "t1", "other-host", 1, datetime.now()))
    merge(spark.createDataFrame(list(stale), RUN_LOCKS), conf.table_path("audit", "run_locks"), ["lock_key"])
    with run_lock(spark, conf, "bill 2026-11-03"):
        pass
    with pytest.raises(RunLocked, match=r"bill 2026-11-04 is already running \(pid 1 on other-host"):
        with run_lock(spark, conf, "bill 2026-11-04"):
            pass


@pytest.mark.parametrize("setting, message", [
    ({"CDR_BILLING__PATHS__WAREHOUSE": "{tmp}/a-file/warehouse"},
     "error: warehouse {tmp}/a-file/warehouse is not writable or not reachable: "
     "org.apache.hadoop.fs.ParentNotDirectoryException"),
    ({"CDR_BILLING__PATHS__WAREHOUSE": "hdfs://127.0.0.1:9/warehouse"},
     "error: warehouse hdfs://127.0.0.1:9/warehouse is not writable or not reachable: java.net.ConnectException"),
    ({"CDR_BILLING__PATHS__RULES": "{tmp}/bad-plan"},
     "error: invalid tariff plan: RatingPlans.csv:3 DestinationRatesId/TimingTag/Weight: unknown DestinationRatesId 'DR_NOPE'"),
    ({"CDR_BILLING__SPARK__JARS_DIR": "{tmp}/no-jars"}, "error: Delta jars missing"),
])
def test_bad_settings_stop_with_one_clear_line_and_write_nothing(conf, tmp_path, monkeypatch, capsys, setting, message):
    from tests.test_rating import write_plan

    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "no-jars").mkdir()
    write_plan(tmp_path / "bad-plan", Destinations=["DST,49"], Rates=["RT,0,1,60s,60s,0s"],
               DestinationRates=["DR,DST,RT,*up,4,0,"], Timings=[], RatingPlans=["RP,DR,*any,10", "RP,DR_NOPE,*any,10"],
               RatingProfiles=["cgrates.org,call,*any,,RP,"])
    for key, value in {**env_for(conf), **setting}.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    assert cli(["run-day", "--date", DAY.isoformat()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message.format(tmp=tmp_path)), err
    assert not Path(conf.paths.warehouse).exists()


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A Spark standalone master and worker on loopback, started from the pip-installed Spark."""
    import socket

    from benchmarks.standalone_cluster import start

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    cluster = start(free_port(), free_port(), cores=2, memory="3g", state=tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_daily_run_and_a_bill_run_on_a_standalone_cluster(spark, world, standalone):
    import json
    import urllib.request

    conf = world["conf"].with_paths(warehouse=str(world["root"] / "on-cluster"))
    on_cluster = {"CDR_BILLING__SPARK__MASTER": standalone.master_url,
                  "CDR_BILLING__SPARK__EXTRA_CONF": json.dumps({"spark.pyspark.python": sys.executable,
                                                                "spark.executor.memory": "1g"})}
    daily = cdr_billing(conf, "run-day", "--date", DAY.isoformat(), "--stages", "collect,validate,rate", **on_cluster)
    assert daily.returncode == 0, daily.stderr[-3000:]
    billed = cdr_billing(conf, "bill", "--run-date", BILL_DATE.isoformat(), **on_cluster)
    assert billed.returncode == 0, billed.stderr[-3000:]
    with urllib.request.urlopen(f"{standalone.web_url}/json/", timeout=10) as response:
        apps = json.load(response)["completedapps"]
    assert len(apps) >= 2 and all(app["cores"] > 0 for app in apps)       # both ran on the cluster's executors
    for table in DAILY_TABLES + BILL_TABLES:
        expected = world["daily"].get(table, world["bill"].get(table))
        assert contents(spark, conf, *table) == expected, table
