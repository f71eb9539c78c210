"""audit/pipeline_runs: every job run records its counts, and conservation is checked here."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.common.config import Config
from jobs.common.delta_io import append
from schemas.tables import PIPELINE_RUNS


class ConservationError(RuntimeError):
    """Records in != records out: something was lost or double counted. The run fails."""


def run_id_prefix(job: str, logical_date: date | None) -> str:
    """What the ids of every run of `job` for `logical_date` begin with (each attempt's id is new)."""
    return f"{job}-{logical_date.isoformat() if logical_date else 'adhoc'}-"


def new_run_id(job: str, logical_date: date | None) -> str:
    return f"{run_id_prefix(job, logical_date)}{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def written_by_runs_of(job: str, logical_date: date | None, column: str = "run_id") -> Column:
    """Rows whose `run_id` is one of a job's runs for the date: a range, not a prefix match, so
    that a Delta table keeping `run_id` statistics skips every other run's files."""
    prefix = run_id_prefix(job, logical_date)
    after_prefix = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return (F.col(column) >= F.lit(prefix)) & (F.col(column) < F.lit(after_prefix))


def not_written_by_other_days_runs_of(job: str, logical_date: date, column: str = "run_id") -> Column:
    """Rows no run of `job` for another logical date wrote (its runs for `logical_date`, its ad hoc
    runs and every other job's are kept): ranges again, so that Delta skips those runs' files."""
    run_id = F.col(column)
    dated_from, dated_to = f"{job}-0", f"{job}-:"          # ':' sorts right after '9'
    return (run_id.isNull() | (run_id < F.lit(dated_from)) | (run_id >= F.lit(dated_to))
            | written_by_runs_of(job, logical_date, column))


@dataclass
class RunRecord:
    job: str
    logical_date: date | None
    run_id: str = ""
    records_in: int = 0
    rated: int = 0
    quarantined: int = 0
    duplicates: int = 0
    pending: int = 0
    details: dict = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        self.run_id = self.run_id or new_run_id(self.job, self.logical_date)

    def check_conservation(self, valid: int) -> None:
        """records_in must equal valid + quarantined + duplicates + pending, exactly."""
        accounted = valid + self.quarantined + self.duplicates + self.pending
        self.details["conservation"] = {"records_in": self.records_in, "valid": valid, "quarantined": self.quarantined,
                                        "duplicates": self.duplicates, "pending": self.pending}
        if accounted != self.records_in:
            raise ConservationError(
                f"{self.job} {self.logical_date}: records_in={self.records_in} but valid={valid} + "
                f"quarantined={self.quarantined} + duplicates={self.duplicates} + pending={self.pending} = {accounted}")

    def save(self, spark, conf: Config, status: str) -> None:
        row = (self.run_id, self.job, self.logical_date, self.records_in, self.rated, self.quarantined,
               self.duplicates, self.pending, self.started_at.replace(tzinfo=None),
               datetime.now(timezone.utc).replace(tzinfo=None), status, json.dumps(self.details, default=str, sort_keys=True))
        # one row per run, saved once: its run_id is new, so nothing is there to match
        append(spark.createDataFrame([row], PIPELINE_RUNS), conf.table_path("audit", "pipeline_runs"))


class audited:
    """Context manager: saves the run record as `succeeded`, or `failed` with the error, always."""

    def __init__(self, spark, conf: Config, record: RunRecord):
        self.spark, self.conf, self.record = spark, conf, record

    def __enter__(self) -> RunRecord:
        return self.record

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.record.details["error"] = f"{exc_type.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        try:
            self.record.save(self.spark, self.conf, "failed" if exc else "succeeded")
        except Exception:
            if exc is None:
                raise
        return False
