import subprocess
import sys
import time
from pathlib import Path

from jobs.common.config import PROJECT_ROOT

DAGS = PROJECT_ROOT / "dags"


def test_dagbag_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    assert not bag.import_errors, bag.import_errors
    assert {"cdr_daily", "billing_cycle", "quarantine_recycle"} <= set(bag.dag_ids)
    for dag in bag.dags.values():
        assert dag.tags and dag.doc_md and not dag.catchup
        for task in dag.tasks:
            assert task.doc_md, f"{dag.dag_id}.{task.task_id} has no doc_md"
            assert task.retries >= 1 and task.execution_timeout
            if task.task_type == "SparkSubmitOperator":      # the secret comes from a masked Variable at run time
                assert "var.value.get('cdr_billing_secret_hash_key'" in task.env_vars["CDR_BILLING__PRIVACY__HASH_KEY"]


def test_dag_files_import_fast_and_without_spark_or_gx():
    # CPU seconds of the import itself (after airflow.sdk): wall time would measure the neighbours
    # of a parallel test run, not the DAG file
    probe = (
        "import sys, time; sys.path.insert(0, {dags!r}); import airflow.sdk;"
        "t = time.process_time(); import importlib; importlib.import_module({name!r});"
        "print(time.process_time() - t, 'pyspark' in sys.modules, 'great_expectations' in sys.modules)"
    )
    for path in DAGS.glob("*.py"):
        out = subprocess.run([sys.executable, "-c", probe.format(dags=str(DAGS), name=path.stem)],
                             capture_output=True, text=True, check=True).stdout.split()
        seconds, spark_loaded, gx_loaded = float(out[-3]), out[-2] == "True", out[-1] == "True"
        assert not spark_loaded and not gx_loaded, path.name
        assert seconds < 1.0, f"{path.name} took {seconds:.2f}s to import"


def test_demo_progress_bar_for_a_person_and_plain_lines_for_a_log():
    from jobs.demo import progress

    live = progress("  cdr_daily 2026-11-02", 3, 6, "rate", 95.2, live=True)
    assert live.startswith("\r") and "[############------------] 3/6 tasks" in live and "rate" in live
    logged = progress("  cdr_daily 2026-11-02", 6, 6, "publish", 181, live=False)
    assert "\r" not in logged and "[########################] 6/6" in logged and logged.endswith("181s")


def test_airflow_on_sqlite_waits_for_the_write_lock(base_conf, tmp_path, monkeypatch):
    """The demo's/tests' Airflow (embedded SQLite) waits for the scheduler's write lock rather than
    failing after sqlite3's 5 s ("database is locked" on `airflow backfill create`)."""
    import importlib
    import sqlite3

    from jobs.demo import airflow_env

    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", raising=False)
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    path = airflow_env(base_conf, tmp_path)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"]
    module, name = path.rsplit(".", 1)
    connect_args = getattr(importlib.import_module(module), name)
    with sqlite3.connect(tmp_path / "airflow.db", **connect_args) as db:
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 60_000
    # another database's driver would not understand a SQLite timeout: left alone there
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow@db/airflow")
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in airflow_env(base_conf, tmp_path)


def test_the_demo_and_its_spark_submits_start_their_jvms_for_short_runs(base_conf, tmp_path, monkeypatch):
    """The demo's (and the Airflow tests') tasks each start a JVM for seconds of work on a small
    day: their spark-submits compile with C1 only and interpret expressions; a run configured by
    hand keeps the full JIT and generated code."""
    from jobs.common.config import load_config
    from jobs.common.spark import INTERPRETED_EXPRESSIONS, session_settings
    from jobs.demo import airflow_env

    monkeypatch.delenv("CDR_BILLING__SPARK__SHORT_RUNS", raising=False)
    by_hand = session_settings(load_config(environ={}))
    assert "TieredStopAtLevel" not in by_hand["spark.driver.extraJavaOptions"]
    assert not set(INTERPRETED_EXPRESSIONS) & set(by_hand)
    for key, value in airflow_env(base_conf, tmp_path).items():
        monkeypatch.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag

    submits = [task for dag in DagBag(str(DAGS)).dags.values() for task in dag.tasks
               if task.task_type == "SparkSubmitOperator"]
    assert submits
    for task in submits:
        options = task.conf["spark.driver.extraJavaOptions"].split()
        assert {"-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=256m"} <= set(options)
        assert {"-XX:TieredStopAtLevel=1"} <= set(task.conf["spark.executor.extraJavaOptions"].split()), "a cluster's too"
        assert {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}.items() <= task.conf.items()
        assert [o for o in options if o.startswith("-XX:SharedArchiveFile=")], "the tasks' drivers map the class archive"
