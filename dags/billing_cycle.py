"""billing_cycle: the daily bill run, after that day's usage is rated."""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.sdk import DAG, Asset

from jobs.airflow_stage import DEFAULT_ARGS, spark_stage

INVOICES = Asset("cdr-billing://gold/invoices")

with DAG(
    dag_id="billing_cycle",
    description="Close the billing period of every account whose bill-cycle day is today",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["billing", "invoices", "spark"],
    doc_md="""
### billing_cycle
Per logical date D: **wait for `cdr_daily` of D → bill run for D**. The bill run closes the
period `[D − 1 month, D)` (operator time zone) of every account whose bill-cycle day is D's day
of month and writes `gold/invoices`, `gold/invoice_lines`, `gold/invoice_line_events` (which
event is on which line) and `gold/tax_summary`.

* Idempotent: an account already invoiced for D is skipped, so clearing the task never changes
  an issued invoice; usage that arrives later goes on the next invoice as late usage.
* Accounts with invalid reference data (plan missing from Plans.csv, plan in another currency,
  unknown currency) are not invoiced; they are listed in `audit/billing_exceptions`.
* Any invoice can be recomputed from the table versions it recorded:
  `cdr-billing bill --reproduce INV-…`; look at one with `cdr-billing invoice show INV-… --html f.html`.
""",
) as dag:
    usage_rated = ExternalTaskSensor(
        task_id="usage_rated",
        external_dag_id="cdr_daily",
        # the rated usage is what a bill needs; a usage-assurance breach must not hold back invoices
        external_task_id="rate",
        allowed_states=["success"],
        failed_states=["failed"],
        mode="reschedule",
        poke_interval=300,
        timeout=int(timedelta(hours=12).total_seconds()),
        doc_md="Waits until `cdr_daily`'s `rate` task for the same logical date succeeded, so the closing period's usage "
               "(including records that landed after midnight) is rated. **On timeout or failure**: fix and "
               "rerun `cdr_daily` for this date first; this task then succeeds on its own or can be cleared.",
    )
    bill = spark_stage("bill", ["bill", "--run-date", "{{ ds }}"], doc_md="""
Runs `cdr-billing bill --run-date {{ ds }}`. Totals are checked before anything is written
(`subtotal` = sum of non-tax lines, `total` = subtotal + tax); a mismatch fails the task with the
invoice named and nothing issued. **On failure**: read the one-line reason at the end of the log;
a rerun after a crash is safe (lines of unissued invoices are replaced).""")
    bill.outlets = [INVOICES]
    usage_rated >> bill
