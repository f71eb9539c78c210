"""quarantine_recycle: retry suspended quarantine records once reference data or tariffs are fixed."""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from jobs.airflow_stage import DEFAULT_ARGS, spark_stage

with DAG(
    dag_id="quarantine_recycle",
    description="Validate and rate suspended quarantine records again with the current reference data and rules",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["billing", "quarantine"],
    doc_md="""
### quarantine_recycle
Trigger after a tariff or reference fix (`reference/subscribers.csv`, `rating_rules/`).

1. Records quarantined by validation for reference data (`UNKNOWN_SUBSCRIBER`) are validated
   again with today's subscribers; those that pass become events.
2. Suspended rating-quarantine events, the events step 1 released (however old their calls:
   a CRM fix can come months later), and any event of the last `validation.max_event_age_days`
   (62) no run has rated (a day whose `rate` task never succeeded) are rated with the current
   rules.

What now passes is marked `recycled` in `silver/quarantine`; the rest stays `suspended` with its
latest reason and one more attempt. Idempotent: a second run finds nothing new.
""",
) as dag:
    spark_stage("recycle", ["recycle"], doc_md="Runs `cdr-billing recycle`. **On failure**: see the one-line reason in the log.")
