"""`cdr-billing demo`: generated data through the project's Airflow DAGs, then a summary."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from jobs.common.config import PROJECT_ROOT, Config

DEMO_START = date(2026, 11, 2)


def airflow_env(conf: Config, out: Path) -> dict[str, str]:
    """The environment the Airflow CLI and its spark-submit children see: the demo's folders."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(PROJECT_ROOT / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]",
                                                             "extra": {"spark-binary": "spark-submit"}}))
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env:          # the embedded SQLite DB
        env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", "jobs.airflow_stage.SQLITE_CONNECT_ARGS")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # each task's spark-submit is a fresh JVM that runs for seconds on a small generated day
    env.setdefault("CDR_BILLING__SPARK__SHORT_RUNS", "true")
    env["CDR_BILLING__PATHS__LANDING"] = str((out / "landing").resolve())
    env["CDR_BILLING__PATHS__REFERENCE"] = str((out / "reference").resolve())
    env["CDR_BILLING__PATHS__WAREHOUSE"] = str((out / "warehouse").resolve())
    env["CDR_BILLING__PATHS__REPORTS"] = str((out / "reports").resolve())
    return env


_TASK_DONE = re.compile(r"new_state=(success|failed|skipped|up_for_retry)")
_TASK_ID = re.compile(r"task_id=([A-Za-z0-9_]+)")


def progress(label: str, done: int, total: int, current: str, seconds: float, live: bool) -> str:
    """One progress line: a bar for a person at a terminal, a plain line for a log."""
    width = 24
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    text = f"{label} [{bar}] {done}/{total} tasks  {current:<12} {seconds:5.0f}s"
    return ("\r" + text) if live else text


def dag_task_ids(env: dict[str, str]) -> dict[str, list[str]]:
    result = subprocess.run([sys.executable, "-c", (
        "import json; from airflow.dag_processing.dagbag import DagBag;"
        f"bag = DagBag({str(PROJECT_ROOT / 'dags')!r});"
        "print(json.dumps({d: bag.dags[d].task_ids for d in bag.dags}))")],
        env=env, capture_output=True, text=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}


def run_dag(dag_id: str, logical_date: date, env: dict[str, str], log_dir: Path, n_tasks: int = 0) -> bool:
    """`airflow dags test` with a progress bar (or per-task lines when stdout is not a terminal)."""
    airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
    log = log_dir / f"{dag_id}_{logical_date}.log"
    live = sys.stdout.isatty()
    started, shown = time.monotonic(), -1
    with log.open("w") as handle:
        process = subprocess.Popen([airflow, "dags", "test", dag_id, logical_date.isoformat()], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(2)
            text = log.read_text(errors="replace")
            done = len(_TASK_DONE.findall(text))
            ids = _TASK_ID.findall(text)
            if live or done != shown:
                line = progress(f"  {dag_id} {logical_date}", done, n_tasks or done, ids[-1] if ids else "starting",
                                time.monotonic() - started, live)
                print(line, end="" if live else "\n", flush=True)
                shown = done
        if live:
            print()
    text = log.read_text(errors="replace")
    ok = process.returncode == 0 and "state=failed" not in text.lower().replace(" ", "")
    return ok


def print_summary(conf: Config) -> None:
    from pyspark.sql import functions as F

    from jobs.common.delta_io import read_table
    from jobs.common.spark import build_spark
    from schemas.tables import BILLING_EXCEPTIONS, INVOICES, PIPELINE_RUNS, QUARANTINE, RATED_EVENTS

    spark = build_spark(conf, app_name="cdr-billing-demo-summary")
    runs = read_table(spark, conf.table_path("audit", "pipeline_runs"), PIPELINE_RUNS)
    latest = runs.where(F.col("status") == "succeeded")
    collected = latest.where(F.col("job") == "collect").agg(F.sum("records_in")).first()[0] or 0
    validated = latest.where(F.col("job") == "validate").agg(
        F.sum("records_in"), F.sum("rated"), F.sum("quarantined"), F.sum("duplicates")).first()
    rated = read_table(spark, conf.table_path("gold", "rated_events"), RATED_EVENTS)
    quarantine = read_table(spark, conf.table_path("silver", "quarantine"), QUARANTINE)
    print("\n=== cdr-billing demo summary ===")
    print(f"records in (landing → bronze):   {collected:>10,}")
    print(f"valid records (silver):          {validated[1] or 0:>10,}")
    print(f"duplicates marked:               {validated[3] or 0:>10,}")
    print(f"rated events (gold):             {rated.count():>10,}   "
          f"(chargeable {rated.where('chargeable').count():,})")
    print("quarantined by reason:")
    for row in quarantine.groupBy("stage", "reason_code").count().orderBy("stage", "reason_code").collect():
        print(f"  {row.stage:<9} {row.reason_code:<26} {row['count']:>8,}")
    print("rated usage per currency (before invoicing):")
    for row in rated.where("chargeable").groupBy("currency").agg(F.sum("cost").alias("cost")).orderBy("currency").collect():
        print(f"  {row.currency:<4} {row.cost:>14,.4f}")
    invoices = read_table(spark, conf.table_path("gold", "invoices"), INVOICES)
    print(f"invoices written:                {invoices.count():>10,}   "
          f"(accounts not invoiced: {read_table(spark, conf.table_path('audit', 'billing_exceptions'), BILLING_EXCEPTIONS).count():,})")
    print("total billed per currency (incl. tax):")
    for row in invoices.groupBy("currency").agg(F.count(F.lit(1)).alias("n"), F.sum("subtotal").alias("net"),
                                                F.sum("tax_total").alias("tax"), F.sum("total").alias("total")
                                                ).orderBy("currency").collect():
        print(f"  {row.currency:<4} {row.total:>14,.2f}   ({row.n:,} invoices, net {row.net:,.2f}, tax {row.tax:,.2f})")
    example = invoices.orderBy(F.col("total").desc()).select("invoice_id").first()
    if example:
        print(f"look at one:                     cdr-billing --warehouse {conf.paths.warehouse} invoice show "
              f"{example.invoice_id} --html invoice.html")
    print_assurance(spark, conf)
    print(f"Delta tables under:              {conf.paths.warehouse}")
    print(f"GX Data Docs:                    {conf.paths.warehouse}/data_docs/index.html")
    spark.stop()


def print_assurance(spark, conf: Config) -> None:
    from pyspark.sql import functions as F

    from jobs.common.delta_io import read_table
    from schemas.tables import USAGE_ASSURANCE, USAGE_ASSURANCE_DAILY

    comparison = read_table(spark, conf.table_path("gold", "usage_assurance"), USAGE_ASSURANCE).where("settled")
    daily = read_table(spark, conf.table_path("gold", "usage_assurance_daily"), USAGE_ASSURANCE_DAILY).where("settled")
    print("usage assurance (settled days, counters vs CDRs per object and 15 min):")
    for row in comparison.groupBy("local_date").pivot("status").count().orderBy("local_date").collect():
        counts = ", ".join(f"{k} {v}" for k, v in row.asDict().items() if k != "local_date" and v)
        print(f"  {row.local_date}: {counts}")
    leaks = (daily.where("leakage > 0").groupBy("local_date", "object_id", "metric", "unit")
             .agg(F.first("leakage").alias("leakage"), F.first("leakage_pct").alias("pct")).orderBy("local_date", "object_id"))
    for row in leaks.collect():
        print(f"  unbilled {row.local_date} {row.object_id:<9} {row.leakage:>14,} {row.unit:<5} ({row.pct} % of carried)")
    print(f"  reports and charts:            {conf.paths.reports}")


def run_demo(conf: Config, out: Path, days: int, events_per_day: int) -> int:
    from jobs.generate.cdrs import GeneratorSettings, generate

    out = out.resolve()
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = generate(GeneratorSettings(out=out, start=DEMO_START, days=days, events_per_day=events_per_day,
                                         timezone=conf.operator.timezone, home_country_code=conf.operator.home_country_code))
    print(f"generated {sum(summary['records'].values()):,} records for {summary['subscribers']} subscriber rows "
          f"({summary['bad_records']} deliberately bad) -> {out}", flush=True)
    env = airflow_env(conf, out)
    tasks = dag_task_ids(env)
    failures = 0
    for offset in range(days):
        day = DEMO_START + timedelta(days=offset)
        for dag_id in ("cdr_daily", "billing_cycle"):
            t0 = time.monotonic()
            ok = run_dag(dag_id, day, env, log_dir, len(tasks.get(dag_id, [])))
            failures += not ok
            print(f"{dag_id:<13} {day}: {'success' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s "
                  f"(log {log_dir / f'{dag_id}_{day}.log'})", flush=True)
    demo_conf = conf.with_paths(landing=env["CDR_BILLING__PATHS__LANDING"], reference=env["CDR_BILLING__PATHS__REFERENCE"],
                                warehouse=env["CDR_BILLING__PATHS__WAREHOUSE"], reports=env["CDR_BILLING__PATHS__REPORTS"])
    print_summary(demo_conf)
    print(f"demo finished in {time.monotonic() - started:.0f}s" + (f" with {failures} failed DAG run(s)" if failures else ""))
    return 1 if failures else 0
