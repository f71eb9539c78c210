"""Publish: the last stage of a day. Declares the day's usage complete for downstream readers.

Writes one row per logical date to `audit/published_days`: the Delta version of each table
finance reads, so a report can pin `rated_events` as published (`versionAsOf`) and later reruns
or rerates are visible as newer versions, and the successful runs of the day per stage (their
counts are in `audit/pipeline_runs`). Also re-registers `billing.<table>` for SQL.
Refuses to publish a day whose collect, validate or rate did not succeed.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.common.audit import RunRecord, audited
from jobs.common.catalog import register_tables
from jobs.common.config import Config
from jobs.common.delta_io import current_version, merge, read_table
from schemas.tables import PIPELINE_RUNS, PUBLISHED_DAYS

REQUIRED = ("collect", "validate", "rate")
PUBLISHED_TABLES = (("gold", "rated_events"), ("gold", "usage_assurance"), ("gold", "usage_assurance_daily"),
                    ("silver", "quarantine"), ("silver", "events"))


class NotReadyToPublish(RuntimeError):
    """A required stage of the day has no successful run."""


def run(spark: SparkSession, conf: Config, logical_date: date, record: RunRecord | None = None) -> RunRecord:
    record = record or RunRecord("publish", logical_date)
    with audited(spark, conf, record):
        runs = read_table(spark, conf.table_path("audit", "pipeline_runs"), PIPELINE_RUNS).where(
            (F.col("logical_date") == F.lit(logical_date)) & (F.col("status") == "succeeded"))
        by_job: dict[str, list[str]] = {}
        for r in runs.orderBy("finished_at").select("job", "run_id").collect():
            by_job.setdefault(r.job, []).append(r.run_id)
        missing = [job for job in REQUIRED if job not in by_job]
        if missing:
            raise NotReadyToPublish(f"{logical_date}: no successful {', '.join(missing)} run; publish refused")
        versions = {f"{layer}/{table}": current_version(spark, conf.table_path(layer, table))
                    for layer, table in PUBLISHED_TABLES}
        row = (logical_date, "assure" in by_job, json.dumps(versions, sort_keys=True), json.dumps(by_job, sort_keys=True),
               datetime.now(timezone.utc).replace(tzinfo=None), record.run_id)
        merge(spark.createDataFrame([row], PUBLISHED_DAYS), conf.table_path("audit", "published_days"), ["logical_date"])
        register_tables(spark, conf)
        record.details["versions"] = versions
        print(f"published {logical_date}: " + ", ".join(f"{name}@v{v}" for name, v in versions.items() if v is not None))
    return record
