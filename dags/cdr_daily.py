"""cdr_daily: one logical date's usage, landing files to rated events."""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, Param, task

from jobs.airflow_stage import DEFAULT_ARGS, landing_root, spark_stage

RATED_EVENTS = Asset("cdr-billing://gold/rated_events")
USAGE_ASSURANCE = Asset("cdr-billing://gold/usage_assurance")

with DAG(
    dag_id="cdr_daily",
    description="Collect, validate, rate one day's CDRs and reconcile them with the network's counters",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["billing", "cdr", "spark"],
    params={"dry_run": Param(False, type="boolean", description="reserved: rerate previews use `cdr-billing rerate --dry-run`")},
    doc_md="""
### cdr_daily
Per logical date: **wait for landing files → collect → validate → rate → assure → publish**.

* Every task is idempotent for its logical date: rerunning it (or the whole DAG, or a backfill)
  leaves the tables as one run does (file manifest + Delta MERGE on stable keys).
* Counts of every run (records in, rated, quarantined, duplicates, pending) are in
  `audit/pipeline_runs`; quarantined records and their reasons in `silver/quarantine`
  (`cdr-billing sql "SELECT reason_code, count(*) FROM billing.quarantine GROUP BY 1"`).
* Usage assurance (switch counters vs CDRs) is the last task: red when more traffic went
  unbilled than the leakage budget allows. `billing_cycle` waits for `rate` only.
""",
) as dag:

    @task.sensor(poke_interval=300, timeout=int(timedelta(hours=6).total_seconds()), mode="reschedule",
                 doc_md="Waits until the landing folder holds CDR files stamped with the logical date. "
                        "**On timeout**: mediation has not delivered; check the mediation export, then clear this task.")
    def landing_files(ds_nodash: str | None = None) -> bool:
        root = landing_root() / "cdr"
        return any(ds_nodash in p.name for p in root.rglob("*.csv*")) if root.exists() else False

    collect = spark_stage("collect", ["run-day", "--date", "{{ ds }}", "--stages", "collect"], doc_md="""
Reads every new landing file into bronze and records it in `bronze/file_manifest`
(checksum, record count). Unreadable files are rejected with a reason, never dropped.
**On failure**: read the task log's last line (one-line reason); fix access/space and clear.""")
    validate = spark_stage("validate", ["run-day", "--date", "{{ ds }}", "--stages", "validate"], doc_md="""
Standardises the day's bronze records, marks duplicates, assembles partial records and applies
the validation rules (row level → `silver/quarantine`; batch level → Great Expectations suites,
results in `audit/validation_results`, Data Docs under `<warehouse>/data_docs/index.html`).
**On failure**: the log names the breached expectation and the Data Docs page; a conservation
failure names the counts that do not add up. Do not clear until the cause is understood.""")
    rate = spark_stage("rate", ["run-day", "--date", "{{ ds }}", "--stages", "rate"], doc_md="""
Rates new silver events against the tariff in `rating_rules/` into `gold/rated_events`.
Unratable events go to quarantine (`RATING_PLAN_NOT_FOUND`, `UNAUTHORIZED_DESTINATION`,
`NO_ACTIVE_TIMING`) and are retried by the `quarantine_recycle` DAG after a tariff fix.
**On failure**: an invalid tariff plan is reported file:line field; fix the plan and clear.""")
    rate.outlets = [RATED_EVENTS]
    assure = spark_stage("assure", ["run-day", "--date", "{{ ds }}", "--stages", "assure"], doc_md="""
Types the day's TS 32.435 counters (`silver/traffic_measurements`) and compares them with the
CDRs per trunk group / APN and 15-minute period (`gold/usage_assurance`; statuses `ok`,
`mismatch`, `missing_cdrs`, `missing_counters`). The previous day is judged once its late CDRs
had a day to arrive: summary in the log and in `reports/usage_assurance_<day>.txt` + `.png`,
per object in `gold/usage_assurance_daily` (leakage in units and money at the average rate).
**On failure** "leakage … > budget": the log names the worst objects; check those trunks/APNs
with mediation (unmediated trunk, lost CDR files) before clearing. Billing is not held back.""")
    assure.outlets = [USAGE_ASSURANCE]
    publish = spark_stage("publish", ["run-day", "--date", "{{ ds }}", "--stages", "publish"], doc_md="""
Declares the day complete: one row in `audit/published_days` with the day's counts and the Delta
version of `rated_events`, `usage_assurance`, `quarantine`, … that downstream reports can pin, and
re-registers `billing.<table>` for SQL. Runs even when assurance breached (`all_done`), so a
leakage alarm never hides the day's usage; it refuses a day whose collect/validate/rate failed.
**On failure**: fix the failed stage first.""", trigger_rule="all_done")

    landing_files() >> collect >> validate >> rate >> assure >> publish
