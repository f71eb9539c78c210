"""silver/quarantine rows: one shape and one id rule for every stage that quarantines."""
from __future__ import annotations

from datetime import date, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.delta_io import update_matched
from schemas import reason_codes as R


def quarantine_id(stage: str, *parts: Column | str) -> Column:
    """Stable across reruns, so that quarantining the same record again is a no-op MERGE."""
    return F.substring(F.sha2(F.concat_ws("#", F.lit(stage), *parts), 256), 1, 32)


def to_quarantine(records: DataFrame, *, stage: str, quarantine_key: list[Column | str], source_file: Column,
                  line_number: Column, record_key: Column, raw_record: Column, event_json: Column,
                  reason_code: Column, reason_detail: Column, run_id: str, logical_date: date | None,
                  now: datetime) -> DataFrame:
    return records.select(
        quarantine_id(stage, *quarantine_key).alias("quarantine_id"), "record_type", F.lit(stage).alias("stage"),
        source_file.alias("source_file"), line_number.cast("long").alias("line_number"), record_key.alias("record_key"),
        raw_record.cast("string").alias("raw_record"), event_json.cast("string").alias("event_json"),
        reason_code.alias("reason_code"), reason_detail.alias("reason_detail"),
        F.lit(now).alias("first_seen_at"), F.lit(now).alias("last_attempt_at"), F.lit(1).alias("attempts"),
        F.lit(R.SUSPENDED).alias("status"), F.lit(run_id).alias("run_id"),
        F.lit(logical_date).cast("date").alias("logical_date"))


def record_attempts(attempts: DataFrame, path: str) -> None:
    """One more retry on quarantine rows: `attempts` has quarantine_id, status (`recycled` where the
    record now passes), reason_code and reason_detail (null where it passes) and attempted_at.
    A row that still fails keeps the latest reason; one that passes keeps the reason it had."""
    update_matched(attempts, path, ["quarantine_id"], {
        "status": "s.status", "reason_code": "coalesce(s.reason_code, t.reason_code)",
        "reason_detail": "coalesce(s.reason_detail, t.reason_detail)",
        "last_attempt_at": "s.attempted_at", "attempts": "t.attempts + 1"})
