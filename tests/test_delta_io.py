"""The Delta write helpers every stage uses."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from jobs.common.delta_io import merge, read_table

SCHEMA = "event_id string, event_date date, amount int"


def test_a_merge_pruned_on_the_event_date_reads_only_the_source_days(spark, tmp_path):
    path = str(tmp_path / "rated")
    old, new = date(2026, 10, 1), date(2026, 11, 2)
    merge(spark.createDataFrame([("a", old, 1), ("b", new, 2)], SCHEMA), path, ["event_id"], partition_by=["event_date"])
    # the old day's files go missing: a MERGE that read them would fail
    for parquet in (Path(path) / f"event_date={old}").glob("*.parquet"):
        parquet.unlink()

    rerun = spark.createDataFrame([("b", new, 2), ("c", new, 3)], SCHEMA)
    merge(rerun, path, ["event_id"], partition_by=["event_date"], prune_on="event_date")
    assert sorted(r.event_id for r in read_table(spark, path).where(f"event_date = '{new}'").collect()) == ["b", "c"]
    with pytest.raises(Exception, match="(?i)not.*found|does not exist"):
        merge(rerun, path, ["event_id"], partition_by=["event_date"])


def test_a_pruned_merge_matches_on_the_key_within_each_source_day(spark, tmp_path):
    path = str(tmp_path / "events")
    first = [("a", date(2026, 11, 1), 1), ("b", date(2026, 11, 2), 2)]
    merge(spark.createDataFrame(first, SCHEMA), path, ["event_id"], update=False, partition_by=["event_date"],
          prune_on="event_date")
    again = [("a", date(2026, 11, 1), 9), ("b", date(2026, 11, 2), 9), ("c", date(2026, 11, 3), 3)]
    merge(spark.createDataFrame(again, SCHEMA), path, ["event_id"], update=False, partition_by=["event_date"],
          prune_on="event_date")
    assert sorted((r.event_id, int(r.amount)) for r in read_table(spark, path).collect()) == [("a", 1), ("b", 2), ("c", 3)]
    merge(spark.createDataFrame(again, SCHEMA), path, ["event_id"], partition_by=["event_date"], prune_on="event_date")
    assert sorted((r.event_id, int(r.amount)) for r in read_table(spark, path).collect()) == [("a", 9), ("b", 9), ("c", 3)]
