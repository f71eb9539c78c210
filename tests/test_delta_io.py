"""The Delta write helpers every stage uses."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from jobs.common.delta_io import append, delete_where, merge, read_table
from jobs.common.expressions import sql_literal

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


def test_a_merge_given_the_source_days_reads_those_and_does_not_look_for_them(spark, tmp_path):
    """A caller that counted the source's days passes them: the MERGE takes them as given (no pass
    over the source to find them), so a day left out is a day it does not match rows in."""
    path = str(tmp_path / "events")
    day, other = date(2026, 11, 2), date(2026, 11, 3)
    rows = spark.createDataFrame([("a", day, 1), ("b", other, 2)], SCHEMA)
    merge(rows, path, ["event_id"], update=False, partition_by=["event_date"], prune_on="event_date",
          prune_values={day, other})
    merge(rows, path, ["event_id"], update=False, partition_by=["event_date"], prune_on="event_date",
          prune_values=[day, other])
    assert read_table(spark, path).count() == 2
    merge(rows, path, ["event_id"], update=False, partition_by=["event_date"], prune_on="event_date",
          prune_values=[day])
    assert sorted(r.event_id for r in read_table(spark, path).collect()) == ["a", "b", "b"]


def test_an_append_reads_nothing_of_the_table(spark, tmp_path):
    """Rows new by construction (a run's audit record) are appended: earlier files are not read,
    so recording a run never waits on, rewrites or conflicts over other runs' records."""
    path = str(tmp_path / "runs")
    append(spark.createDataFrame([("a", date(2026, 11, 1), 1)], SCHEMA), path)
    for parquet in Path(path).glob("*.parquet"):
        parquet.unlink()
    append(spark.createDataFrame([("b", date(2026, 11, 2), 2)], SCHEMA), path)
    with pytest.raises(Exception, match="(?i)not.*found|does not exist"):
        merge(spark.createDataFrame([("c", date(2026, 11, 3), 3)], SCHEMA), path, ["event_id"])


def test_delete_where_removes_only_the_matching_rows(spark, tmp_path):
    path = str(tmp_path / "locks")
    rows = [("run-day 2026-11-02", date(2026, 11, 2), 1), ("run-day 2026-11-02", date(2026, 11, 2), 2),
            ("it's", date(2026, 11, 3), 3)]
    append(spark.createDataFrame(rows, SCHEMA), path)
    delete_where(spark, path, "event_id = 'run-day 2026-11-02' AND amount = 2")
    delete_where(spark, path, f"event_id = {sql_literal('nobody')}")
    assert sorted(int(r.amount) for r in read_table(spark, path).collect()) == [1, 3]
    quoted = sql_literal("it's")
    delete_where(spark, path, f"event_id = {quoted}")
    assert sorted(int(r.amount) for r in read_table(spark, path).collect()) == [1]


def _statistics_columns(path: str) -> list[list[str]]:
    """The columns each file added to the table has statistics for, from its Delta log."""
    import json

    added = [json.loads(line)["add"] for log in sorted((Path(path) / "_delta_log").glob("*.json"))
             for line in log.read_text().splitlines() if '"add"' in line]
    return [sorted(json.loads(a["stats"])["nullCount"]) for a in added]


def test_wide_tables_keep_statistics_only_for_the_columns_reads_skip_files_by(spark, tmp_path):
    from jobs.common.delta_io import ensure_table
    from schemas.landing import CDR_KINDS
    from schemas.tables import (BRONZE_TABLES, EVENTS, INVOICE_LINE_EVENTS, RATED_EVENTS, RECORD_KEYS, STATS_COLUMNS,
                                TRAFFIC_MEASUREMENTS, bronze_schema)

    schemas = {**{f"bronze/{BRONZE_TABLES[k.name]}": bronze_schema(k) for k in CDR_KINDS},
               "bronze/traffic_measurements": TRAFFIC_MEASUREMENTS, "silver/events": EVENTS,
               "silver/record_keys": RECORD_KEYS, "gold/rated_events": RATED_EVENTS,
               "gold/invoice_line_events": INVOICE_LINE_EVENTS}
    assert set(schemas) == set(STATS_COLUMNS)
    for table, schema in schemas.items():
        path = str(tmp_path / table)
        ensure_table(spark, path, schema)
        append(spark.createDataFrame([tuple([None] * len(schema))], schema), path)
        assert _statistics_columns(path) == [sorted(STATS_COLUMNS[table])], table
    # a table not named keeps Delta's default: every column
    path = str(tmp_path / "silver" / "quarantine_like")
    append(spark.createDataFrame([("a", 1)], "x string, y int"), path)
    assert _statistics_columns(path) == [["x", "y"]]


def test_a_merge_writes_one_day_from_every_task_that_holds_its_rows(spark, tmp_path):
    """A day's rows share one partition value: the MERGE writes them from the tasks that hold
    them (in parallel, no shuffle of the wide rows), not funnelled into one task by that value."""
    from delta.tables import DeltaTable

    path = str(tmp_path / "events")
    day = date(2026, 11, 2)
    rows = spark.createDataFrame([(f"e{i}", day, i) for i in range(40)], SCHEMA).repartition(4)
    merge(rows, path, ["event_id"], update=False, partition_by=["event_date"], prune_on="event_date")
    metrics = DeltaTable.forPath(spark, path).history(1).collect()[0].operationMetrics
    assert (metrics["numTargetRowsInserted"], metrics["numTargetFilesAdded"]) == ("40", "4")
    assert read_table(spark, path).count() == 40


def test_a_table_created_with_earlier_statistics_columns_gets_the_current_ones(spark, tmp_path):
    """silver/events written before run_id statistics were kept: its next write brings the
    property up to date, and the files written from then on carry run_id statistics."""
    from jobs.common.delta_io import merge
    from schemas.tables import EVENTS, STATS_COLUMNS

    path = str(tmp_path / "silver" / "events")
    row = lambda event_id: tuple(event_id if name == "event_id" else None for name in EVENTS.fieldNames())  # noqa: E731
    (spark.createDataFrame([row("a")], EVENTS).write.format("delta")
     .option("delta.dataSkippingStatsColumns", "event_id,account_id,event_start").save(path))
    merge(spark.createDataFrame([row("b")], EVENTS), path, ["event_id"])
    assert _statistics_columns(path) == [["account_id", "event_id", "event_start"], sorted(STATS_COLUMNS["silver/events"])]


def test_two_runs_creating_a_table_at_once_both_find_it(spark, tmp_path):
    """Two first runs (threads of one driver here, as in the run-lock race) create the same table:
    the loser fails inside Delta and must find the winner's table, not fail the run. Before this
    was handled, 3 races in 15 failed with DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION or
    DELTA_TABLE_NOT_FOUND."""
    from jobs.common.delta_io import ensure_table
    from tests.threads import run_together

    errors, schema = [], spark.createDataFrame([], SCHEMA).schema
    for race in range(12):
        path = str(tmp_path / f"table{race}")
        errors += run_together(lambda path=path: ensure_table(spark, path, schema, ["event_date"]))
        assert read_table(spark, path).count() == 0
    assert not errors, errors
