"""One run per job and logical date at a time: a lease row in audit/run_locks, taken by MERGE.

Two runs racing for the same key both MERGE-insert their row; Delta commits one and fails the
other with a concurrent-append conflict, whose retry then finds the first run's row. The loser
raises RunLocked naming the holder, before it has written anything. A lock whose holder is gone
(a killed run on this host: its process no longer exists) or older than
`runs.lock_stale_after_hours` (a holder on another host) is taken over, so a crash never needs
a person to clean up before the rerun.
"""
from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.common.config import Config
from jobs.common.delta_io import delete_where, ensure_table, read_table, with_conflict_retry
from jobs.common.expressions import sql_literal
from schemas.tables import RUN_LOCKS


class RunLocked(RuntimeError):
    """Another run holds the lock for this job and date."""


def _alive(host: str, pid: int) -> bool | None:
    """Whether the holder process runs; None when it is on another host and cannot be checked."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder, now: datetime, stale_after: timedelta) -> bool:
    alive = _alive(holder.host, holder.pid)
    return alive is False or (alive is None and now - holder.acquired_at > stale_after)


@contextmanager
def run_lock(spark: SparkSession, conf: Config, lock_key: str) -> Iterator[str]:
    from delta.tables import DeltaTable

    path = conf.table_path("audit", "run_locks")
    ensure_table(spark, path, RUN_LOCKS)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    token = uuid.uuid4().hex
    mine = spark.createDataFrame([(lock_key, token, socket.gethostname(), os.getpid(), now)], RUN_LOCKS)

    def holder():
        return read_table(spark, path).where(F.col("lock_key") == lock_key).first()

    current = holder()
    if current is not None and not is_stale(current, now, timedelta(hours=conf.runs.lock_stale_after_hours)):
        raise RunLocked(_message(lock_key, current))
    # take over only the very row judged stale: a third run that got there first wins instead
    takeover = f"t.token = '{current.token}'" if current is not None else "false"
    with_conflict_retry(lambda: DeltaTable.forPath(spark, path).alias("t").merge(
        mine.alias("s"), "t.lock_key = s.lock_key").whenMatchedUpdateAll(condition=takeover)
        .whenNotMatchedInsertAll().execute())
    current = holder()
    if current is None or current.token != token:
        raise RunLocked(_message(lock_key, current))
    try:
        yield token
    finally:
        delete_where(spark, path, f"lock_key = {sql_literal(lock_key)} AND token = '{token}'")


def _message(lock_key: str, holder) -> str:
    if holder is None:
        return f"{lock_key} is locked by a run that has just finished; retry"
    return (f"{lock_key} is already running (pid {holder.pid} on {holder.host} since {holder.acquired_at:%Y-%m-%d %H:%M:%S} "
            f"UTC); wait for it, or retry once it has ended")
