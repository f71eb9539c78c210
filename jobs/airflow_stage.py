"""Shared, import-light helpers for the DAG files: how a stage is submitted to Spark.

No pyspark or Great Expectations here: this runs at every DAG-file parse.
"""
from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from jobs.common.config import PROJECT_ROOT, load_config
from jobs.common.jars import jar_paths
from jobs.common.spark import session_settings

ENTRY = str(PROJECT_ROOT / "jobs" / "spark_entry.py")
DEFAULT_ARGS = {
    "owner": "billing-data-eng",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
}

# Airflow's SQLite metadata DB (the embedded default) allows one writer at a time; the scheduler,
# DAG processor, API server and a CLI call such as `airflow backfill create` compete for it.
# sqlite3 gives up after 5 s ("database is locked"): wait longer instead. Set as
# AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=jobs.airflow_stage.SQLITE_CONNECT_ARGS (SQLite only).
SQLITE_CONNECT_ARGS = {"timeout": 120}


def spark_stage(task_id: str, args: list[str], doc_md: str, **operator_args):
    """A SparkSubmitOperator running one `cdr-billing` command on the spark_default connection."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    conf = load_config()
    jars = ",".join(str(path) for path in jar_paths(conf.spark))
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id="spark_default",
        application=ENTRY,
        application_args=args,
        jars=jars,
        conf={**session_settings(conf), "spark.pyspark.python": sys.executable,
              "spark.pyspark.driver.python": sys.executable},
        driver_memory=conf.spark.driver_memory,
        name=f"cdr-billing-{task_id}",
        env_vars={"PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(PROJECT_ROOT),
                  # rendered at run time, never at parse time; empty (unset) keeps the configured key
                  "CDR_BILLING__PRIVACY__HASH_KEY": "{{ var.value.get('cdr_billing_secret_hash_key', '') }}"},
        doc_md=doc_md,
        **operator_args,
    )


def landing_root() -> Path:
    return Path(load_config().paths.landing)
