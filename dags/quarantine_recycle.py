"""quarantine_recycle: retry suspended quarantine records once reference data or tariffs are fixed."""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from jobs.airflow_stage import DEFAULT_ARGS, spark_stage

with DAG(
    dag_id="quarantine_recycle",
    description="Rate suspended quarantine records again with the current rules",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["billing", "quarantine"],
    doc_md="""
### quarantine_recycle
Trigger after a tariff or reference fix. Suspended rating-quarantine events are rated with the
current rules; those that now rate are marked `recycled`, the others stay `suspended` with their
latest reason. Idempotent: a second run finds nothing new.
""",
) as dag:
    spark_stage("recycle", ["recycle"], doc_md="Runs `cdr-billing recycle`. **On failure**: see the one-line reason in the log.")
