"""Standardise + validate: bronze (one logical date's ingest) -> silver.

Every bronze record ends in exactly one place: silver/events (alone or as a part of an assembled
call/session), silver/quarantine (with a reason), silver/duplicates, or silver/partial_records
as `pending`. The run counts them and fails if they do not add up (audit/pipeline_runs).
Reruns for the same date are idempotent: every write is a MERGE on a stable key.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.common.audit import RunRecord, audited
from jobs.common.config import Config
from jobs.common.delta_io import (merge, read_table, table_exists, table_properties, tally_with_partition_values,
                                  update_matched, with_conflict_retry)
from jobs.common.expressions import local_date, local_midnight_utc, lookup, sql_literal
from jobs.common.quarantine import quarantine_id, record_attempts, to_quarantine
from jobs.common.reference import attach_subscriber, read_subscribers
from jobs.standardise import STANDARDISERS
from schemas import reason_codes as R
from schemas.landing import CDR_KINDS
from schemas.tables import (BRONZE_TABLES, DUPLICATES, EVENTS, FILE_MANIFEST, QUARANTINE, RECORD_KEYS,
                            USAGE_UNITS)
from schemas.validation_rules import Rule, rules_for

STAGE = "validate"
PENDING, ASSEMBLED, EXPIRED = "pending", "assembled", "expired"
# A record repeats an indexed one with its key whose event dates are at most this many days apart.
# A date, not a time: a re-sent record whose start was corrected (say, from UTC to local time) is
# still caught, and the index is read a few days' partitions at a time, not a whole window of them.
# Further apart, an equal key is a reused call reference: a new record.
DUPLICATE_DAYS_APART = 1


def run_bounds(conf: Config, logical_date: date) -> dict:
    """Bounds the rules compare against, fixed by the logical date so that reruns agree."""
    tz = conf.operator.timezone
    day_end = local_midnight_utc(logical_date + timedelta(days=1), tz)
    return {"future_limit": day_end + timedelta(minutes=conf.validation.future_tolerance_minutes),
            "stale_before": local_midnight_utc(logical_date - timedelta(days=conf.validation.max_event_age_days), tz),
            "max_call_duration_s": conf.validation.max_call_duration_s,
            "max_data_volume_bytes": conf.validation.max_data_volume_bytes,
            "partial_expiry_before": day_end - timedelta(hours=conf.validation.partial_timeout_hours)}


def _bound(value, bounds: dict):
    return bounds[value] if isinstance(value, str) else value


def rule_passes(rule: Rule, bounds: dict) -> str:
    """The rule as a SQL condition over the standardised frame."""
    col = f"`{rule.column}`"
    if rule.check == "null":
        return f"{col} IS NULL"
    if rule.check == "not_null":
        return f"{col} IS NOT NULL"
    if rule.check == "regex":
        return f"({col} IS NULL OR {col} RLIKE {sql_literal(rule.regex)})"
    if rule.check == "in_set":
        return f"({col} IS NULL OR {col} IN ({', '.join(sql_literal(v) for v in rule.value_set)}))"
    if rule.check == "between":
        low, high = _bound(rule.min_value, bounds), _bound(rule.max_value, bounds)
        inside = [f"{col} {op} {sql_literal(bound)}" for op, bound in ((">=", low), ("<=", high)) if bound is not None]
        return f"({col} IS NULL OR ({' AND '.join(inside) or 'true'}))"
    raise ValueError(f"unknown check {rule.check}")


def _detail(rule: Rule) -> str:
    if rule.column == "parse_error":
        return "parse_error"
    if rule.column == "missing_field":
        return "concat('empty required field(s): ', missing_field)"
    return (f"concat({sql_literal(rule.detail + ' (' + rule.column + '=')}, "
            f"coalesce(CAST(`{rule.column}` AS STRING), 'null'), ')')")


def apply_rules(typed: DataFrame, bounds: dict) -> DataFrame:
    """Add reason_code / reason_detail: the first rule of the record's type that it fails.

    Built as one SQL expression: composing ~50 rules from Column objects cost thousands of
    driver-to-JVM calls (seconds per run) for the same plan.
    """
    branches = []
    for record_type in sorted(STANDARDISERS):
        failures = [f"CASE WHEN NOT {rule_passes(rule, bounds)} THEN named_struct('code', {sql_literal(rule.reason_code)}, "
                    f"'detail', {_detail(rule)}) END" for rule in rules_for(record_type)]
        if failures:
            branches.append(f"WHEN {sql_literal(record_type)} THEN coalesce({', '.join(failures)})")
    reason = F.expr(f"CASE record_type {' '.join(branches)} END") if branches else F.lit(None)
    return typed.withColumn("_reason", reason).select(
        "*", F.col("_reason.code").alias("reason_code"), F.col("_reason.detail").alias("reason_detail")).drop("_reason")


# Repeats are broadcast onto the batch up to this many; beyond it (a day re-sent under new file
# names) they are joined the ordinary way, shuffling the batch.
BROADCAST_REPEATS_MAX = 2_000_000


def _keyed() -> Column:
    """Rows that take part in duplicate detection: split into fields, with a key."""
    return F.col("parse_error").isNull() & F.col("record_key").isNotNull()


def key_occurrences(batch: DataFrame, timezone_name: str) -> DataFrame:
    """(record_type, record_key, _at: where the row is, _date: its event date) of the batch's keyed
    rows: all duplicate detection needs of them, small enough to keep while the index is read."""
    return batch.where(_keyed()).select(
        "record_type", "record_key", F.struct("source_file", "line_number").alias("_at"),
        local_date(F.col("event_start"), timezone_name).alias("_date"))


def key_event_dates(occurrences: DataFrame) -> set:
    """The event dates of the key occurrences (None for an unreadable start): which partitions of
    the key index their repeats can be in, and which their new keys go to."""
    return {row[0] for row in occurrences.select("_date").distinct().collect()}


def find_repeats(occurrences: DataFrame, prior_keys: DataFrame) -> DataFrame:
    """(source_file, line_number, first_source_file, first_line_number) of each key occurrence that
    repeats an earlier record: one in the key index (earlier runs) with its key whose event date is
    at most DUPLICATE_DAYS_APART from the row's own (both unreadable counts as equal), the earliest
    indexed if several; else the batch's row with its key at the lowest (source_file, line_number).
    A row is never its own repeat, so rerunning a batch finds the same.

    Only the key columns travel through the shuffle that groups equal keys, not the batch's wide
    rows (raw record and every typed field): at 10M records the pass that marks them took 126 s
    instead of 164 s (it reads bronze's key columns a second time, which takes back part of that)."""
    prior = prior_keys.select(
        F.col("record_type").alias("_prior_type"), F.col("record_key").alias("_prior_key"),
        F.col("key_date").alias("_prior_seen"), F.struct("source_file", "line_number").alias("_prior"),
        F.col("event_date").alias("_prior_date"))
    near = ((F.abs(F.datediff("_prior_date", "_date")) <= DUPLICATE_DAYS_APART)
            | (F.col("_prior_date").isNull() & F.col("_date").isNull()))
    same_key = (F.col("record_type") == F.col("_prior_type")) & (F.col("record_key") == F.col("_prior_key"))
    first = F.coalesce(F.col("_prior"), F.min("_at").over(Window.partitionBy("record_type", "record_key")))
    # two index entries of a key can both be near a row (a day before and a day after it)
    earliest = F.min(F.struct(F.col("_prior_seen"), F.col("_first"))).alias("_earliest")
    return (occurrences.join(prior, same_key & near, "left").select("_at", "_prior_seen", first.alias("_first"))
            .where(F.col("_first") != F.col("_at"))
            .groupBy("_at").agg(earliest)
            .select(F.col("_at.source_file").alias("source_file"), F.col("_at.line_number").alias("line_number"),
                    F.col("_earliest._first.source_file").alias("first_source_file"),
                    F.col("_earliest._first.line_number").alias("first_line_number")))


def mark_duplicates(batch: DataFrame, repeats: DataFrame, broadcast: bool = True) -> DataFrame:
    """The batch with first_source_file/first_line_number (null unless the row is a repeat)."""
    found = F.broadcast(repeats) if broadcast else repeats
    return batch.join(found, ["source_file", "line_number"], "left").select(
        *batch.columns, "first_source_file", "first_line_number")


def read_key_window(spark: SparkSession, path: str, event_dates: set) -> DataFrame:
    """The key index's entries that records of `event_dates` are judged against: those of the dates
    at most DUPLICATE_DAYS_APART from one of them (and of no date, if one is None). Only those
    partitions are read: the index grows by a day's keys every day, a batch's dates stay few."""
    near = sorted({day + timedelta(days=k) for day in event_dates if day is not None
                   for k in range(-DUPLICATE_DAYS_APART, DUPLICATE_DAYS_APART + 1)})
    wanted = F.col("event_date").isin(near) | (F.col("event_date").isNull() if None in event_dates else F.lit(False))
    index = read_table(spark, path, RECORD_KEYS)
    if "event_date" not in index.columns:
        raise KeyIndexLayoutError(f"{path} is partitioned by the day a key was first seen (the layout before "
                                  "event dates); run `cdr-billing rebuild-key-index` once to rebuild it")
    return index.where(wanted)


class KeyIndexLayoutError(RuntimeError):
    """The key index was written by an earlier version, without event dates."""


def rebuild_key_index(spark: SparkSession, conf: Config, record: RunRecord | None = None) -> RunRecord:
    """silver/record_keys made again from what it indexes: every keyed bronze record that
    silver/duplicates does not list as a repeat, under the date it was ingested (its validate run's
    logical date) and its event date. One atomic overwrite: for an index of the earlier layout, or
    one lost. The run (keys indexed: records_in) goes to audit/pipeline_runs like any other."""
    record = record or RunRecord("rebuild_key_index", None)
    with audited(spark, conf, record):
        repeats = read_table(spark, conf.table_path("silver", "duplicates"), DUPLICATES).select("source_file", "line_number")
        frames = []
        for kind in CDR_KINDS:
            path = conf.table_path("bronze", BRONZE_TABLES[kind.name])
            if table_exists(spark, path):
                bronze = read_table(spark, path)
                # standardising drops the ingest date; a file is ingested once, so its lines name it
                ingested = bronze.select("source_file", "line_number", F.col("ingest_date").alias("key_date"))
                frames.append(STANDARDISERS[kind.name](bronze, conf.operator)
                              .where(_keyed())
                              .join(repeats, ["source_file", "line_number"], "left_anti")
                              .join(ingested, ["source_file", "line_number"])
                              .select("record_type", "record_key", "source_file", "line_number",
                                      F.lit(record.run_id).alias("run_id"), "key_date", event_date(conf).alias("event_date")))
        keys = reduce(DataFrame.unionByName, frames, spark.createDataFrame([], RECORD_KEYS)).localCheckpoint(eager=True)
        # the whole table (its partitioning too), not only the partitions written: static mode
        path = conf.table_path("silver", "record_keys")
        writer = (keys.write.format("delta").mode("overwrite").option("partitionOverwriteMode", "static")
                  .option("overwriteSchema", "true").options(**table_properties(path)).partitionBy("event_date"))
        with_conflict_retry(lambda: writer.save(path))
        record.records_in = keys.count()
    return record


def write_record_keys(keys: DataFrame, path: str, event_dates: set, key_date: date) -> None:
    """Index the keys first seen in the run of `key_date` (which every row carries), partitioned by
    their event date; `event_dates` holds every event date among them (more do no harm).

    A key near an indexed one was marked a duplicate and never gets here, so the only match
    possible is a rerun's: the MERGE matches a key within its own event date's partition and among
    the rows of its own run date, and reads only the files holding those (their statistics tell),
    not yesterday's partition full of earlier runs' keys. A key far from its indexed entries (a
    call reference the switch has wrapped round to) is new and indexed beside them."""
    merge(keys, path, ["record_type", "record_key"], update=False, partition_by=["event_date"], prune_on="event_date",
          prune_values=event_dates, target_filter=F.col("t.key_date") == F.lit(key_date))


def classify(marked: DataFrame) -> DataFrame:
    """outcome: quarantined | duplicate | single | part (exactly one per record)."""
    return marked.withColumn("outcome", F.when(F.col("parse_error").isNotNull(), F.lit("quarantined"))
                             .when(F.col("first_source_file").isNotNull(), F.lit("duplicate"))
                             .when(F.col("reason_code").isNotNull(), F.lit("quarantined"))
                             .when(F.col("is_partial"), F.lit("part"))
                             .otherwise(F.lit("single")))


def narrow_for_writes(classified: DataFrame) -> DataFrame:
    """The classified batch as the run's writes and suites read it: the raw record only where a
    table keeps it (quarantine rows, stored parts), not on the singles and duplicates (most rows),
    whose events and duplicate rows point at their file and line instead; and without is_partial,
    which only `classify` reads."""
    keeps_raw = F.col("outcome").isin("quarantined", "part")
    return classified.drop("is_partial").withColumn("raw_record", F.when(keeps_raw, F.col("raw_record")))


def classify_once(checked: DataFrame, repeats: DataFrame, broadcast: bool = True) -> DataFrame:
    """The classified batch, computed once (a local checkpoint) for every table the run writes from it.

    Persisted instead, every plan built on it carried its whole lineage (bronze, standardising,
    rules, repeats), and Delta re-caches a persisted plan that reads a table the run then writes
    (it reads silver/record_keys). Validate on the 1M benchmark day: 132.8 s -> 111.4 s. At 10M
    records the checkpoint does not fit the heap and lands on local disk: 3.4 GB of rows, 1.6 GB
    without the raw record of the singles and duplicates (`narrow_for_writes`)."""
    return narrow_for_writes(classify(mark_duplicates(checked, repeats, broadcast=broadcast))).localCheckpoint(eager=True)


def event_date(conf: Config) -> Column:
    """An event's date: the operator-zone calendar date of its start (its silver/events partition)."""
    return local_date(F.col("event_start"), conf.operator.timezone)


def tally_outcomes(batch: DataFrame, conf: Config) -> tuple[dict, set]:
    """The batch's records counted by outcome, and the dates of the events the singles become: the
    run's counts and the partitions its events MERGE reads, which that MERGE otherwise found by a
    pass of its own (10M records: 7 s)."""
    return tally_with_partition_values(batch, "outcome", F.col("outcome") == "single", event_date(conf))


def not_singles(batch: DataFrame) -> DataFrame:
    """The classified batch's rows that are not single events (quarantined, duplicates, parts: about
    1 % of a generated day), as a checkpoint of their own. The quarantine, duplicates and partials
    writes and the parts' count read only these; from the whole batch each was a pass over every
    row (at 10M records the batch is 1.6 GB on local disk)."""
    return batch.where(F.col("outcome") != "single").localCheckpoint(eager=True)


def _event_id(record_type: Column, group_key: Column) -> Column:
    return F.substring(F.sha2(F.concat_ws("#", record_type, group_key), 256), 1, 32)


def singles_to_events(singles: DataFrame, conf: Config, run_id: str) -> DataFrame:
    return singles.select(
        _event_id(F.col("record_type"), F.col("group_key")).alias("event_id"), "record_type",
        F.array("record_key").alias("source_keys"), F.array("source_file").alias("source_files"),
        "served_msisdn", "destination", "event_start", event_date(conf).alias("event_date"),
        "usage", _usage_unit(F.col("record_type")).alias("usage_unit"), "chargeable", "category",
        "account_id", "plan_id", "currency", "tax_region", "msc_outgoing_tkgp", "apn", "serving_plmn",
        F.lit(run_id).alias("run_id"),
    )


def _usage_unit(record_type: Column) -> Column:
    return lookup(USAGE_UNITS, record_type)


def evaluate_groups(parts: DataFrame, expiry_before: datetime) -> DataFrame:
    """Per group of parts: complete (1..n present, n closes), expired (oldest part too old) or pending."""
    agg = parts.groupBy("record_type", "group_key").agg(
        F.countDistinct("sequence").alias("n_distinct"), F.max("sequence").alias("max_seq"),
        F.max(F.when(F.col("is_last_part"), F.col("sequence"))).alias("closing_seq"),
        F.min("event_start").alias("oldest_start"))
    complete = (F.col("n_distinct") == F.col("max_seq")) & (F.col("closing_seq") == F.col("max_seq"))
    return agg.select("record_type", "group_key", F.when(complete, F.lit(ASSEMBLED))
                      .when(F.col("oldest_start") < F.lit(expiry_before), F.lit(EXPIRED))
                      .otherwise(F.lit(PENDING)).alias("group_status"))


def assemble(parts: DataFrame, conf: Config, run_id: str) -> DataFrame:
    """Complete groups -> one event: usage summed, start and PLMN/trunk of the first part."""
    first = lambda c: F.min_by(c, "sequence")  # noqa: E731
    ordered_keys = F.transform(F.array_sort(F.collect_list(F.struct("sequence", "record_key"))), lambda s: s.record_key)
    ordered_files = F.array_distinct(F.transform(F.array_sort(F.collect_list(F.struct("sequence", "source_file"))),
                                                 lambda s: s.source_file))
    events = parts.groupBy("record_type", "group_key").agg(
        ordered_keys.alias("source_keys"), ordered_files.alias("source_files"),
        first("served_msisdn").alias("served_msisdn"), first("destination").alias("destination"),
        first("event_start").alias("event_start"), F.sum("usage").alias("usage"),
        F.bool_or("chargeable").alias("chargeable"), first("category").alias("category"),
        first("account_id").alias("account_id"), first("plan_id").alias("plan_id"),
        first("currency").alias("currency"), first("tax_region").alias("tax_region"),
        first("msc_outgoing_tkgp").alias("msc_outgoing_tkgp"), first("apn").alias("apn"),
        first("serving_plmn").alias("serving_plmn"))
    return events.select(
        _event_id(F.col("record_type"), F.col("group_key")).alias("event_id"), "record_type", "source_keys",
        "source_files", "served_msisdn", "destination", "event_start", event_date(conf).alias("event_date"), "usage",
        _usage_unit(F.col("record_type")).alias("usage_unit"), "chargeable", "category", "account_id", "plan_id",
        "currency", "tax_region", "msc_outgoing_tkgp", "apn", "serving_plmn", F.lit(run_id).alias("run_id"))


def _record_quarantine_key() -> list:
    """A record's quarantine row is keyed by where it came from: one row per line, whatever the reason."""
    return ["record_type", "source_file", F.col("line_number").cast("string")]


def quarantine_rows(records: DataFrame, reason_code: Column, reason_detail: Column, run_id: str,
                    logical_date: date, now: datetime) -> DataFrame:
    line = F.col("line_number").cast("string")
    return to_quarantine(
        records, stage=STAGE, quarantine_key=_record_quarantine_key(), source_file=F.col("source_file"),
        line_number=F.col("line_number"), record_key=F.coalesce(F.col("record_key"), F.concat_ws("#", "source_file", line)),
        raw_record=F.col("raw_record"), event_json=F.lit(None), reason_code=reason_code, reason_detail=reason_detail,
        run_id=run_id, logical_date=logical_date, now=now)


PARTIAL_COLUMNS = ("record_type", "record_key", "group_key", "sequence", "is_last_part", "source_file", "line_number",
                   "raw_record", "served_msisdn", "destination", "event_start", "usage", "chargeable", "category",
                   "msc_outgoing_tkgp", "apn", "serving_plmn", "account_id", "plan_id", "currency", "tax_region")


def read_batch(spark: SparkSession, conf: Config, logical_date: date) -> DataFrame:
    """All bronze records ingested on the logical date, standardised into one typed frame."""
    frames = []
    for kind in CDR_KINDS:
        path = conf.table_path("bronze", BRONZE_TABLES[kind.name])
        if not table_exists(spark, path):
            continue
        todays = read_table(spark, path).where(F.col("ingest_date") == F.lit(logical_date))
        frames.append(STANDARDISERS[kind.name](todays, conf.operator))
    if not frames:
        return None
    return reduce(lambda a, b: a.unionByName(b), frames)


def settle_partials(stored: DataFrame, new_parts: DataFrame, expiry_before: datetime) -> DataFrame:
    """Every part of every open group (stored or new), with its group's status after this run.

    Pure. `is_new` marks parts seen for the first time; a part already stored keeps its row.
    `stored` needs the parts of open groups and those of the new parts' dates, no others
    (`read_stored_parts`).
    """
    fresh = new_parts.join(stored.select("record_type", "record_key"), ["record_type", "record_key"], "left_anti")
    candidates = stored.withColumn("is_new", F.lit(False)).unionByName(fresh.withColumn("is_new", F.lit(True)))
    open_groups = candidates.where(F.col("status") != ASSEMBLED).select("record_type", "group_key").distinct()
    parts = candidates.join(open_groups, ["record_type", "group_key"])
    return parts.join(evaluate_groups(parts, expiry_before), ["record_type", "group_key"])


# silver/partial_records keeps every part ever seen (~5 % of a generated day's records), partitioned
# so that a run reads the parts of open groups and of its own parts' event dates, not all of them
PARTIALS_LAYOUT = ["status", "event_date"]
STORED_PART_COLUMNS = (*PARTIAL_COLUMNS, "status", "run_id", "event_date")


def ensure_partials_layout(spark: SparkSession, conf: Config, path: str) -> None:
    """Rewrite, once and in one commit, a silver/partial_records written before PARTIALS_LAYOUT:
    every part given its event date, partitioned by status and that date."""
    from delta.tables import DeltaTable

    if not table_exists(spark, path) or list(DeltaTable.forPath(spark, path).detail().first().partitionColumns) == PARTIALS_LAYOUT:
        return
    parts = read_table(spark, path).withColumn("event_date", event_date(conf)).select(*STORED_PART_COLUMNS)
    writer = (parts.localCheckpoint(eager=True).write.format("delta").mode("overwrite")
              .option("partitionOverwriteMode", "static").option("overwriteSchema", "true").partitionBy(*PARTIALS_LAYOUT))
    with_conflict_retry(lambda: writer.save(path))


def _parts_judged_with(event_dates: set, table: str = "") -> Column:
    """The stored parts new parts of `event_dates` are judged with: those of open groups (pending or
    expired, which a late part can still complete) and every part of those dates (where a rerun
    finds the parts it already stored). Partition columns only: Delta reads no other partition."""
    column = lambda name: F.col(f"{table}{name}")  # noqa: E731
    dates = [day for day in event_dates if day is not None]
    of_dates = column("event_date").isin(dates) if dates else F.lit(False)
    if None in event_dates:
        of_dates = of_dates | column("event_date").isNull()
    return (column("status") != F.lit(ASSEMBLED)) | of_dates


def read_stored_parts(spark: SparkSession, path: str, new_parts: DataFrame | None) -> tuple[DataFrame | None, set]:
    """(the stored parts `settle_partials` judges `new_parts` with, the new parts' event dates);
    None where no part was ever stored."""
    dates = set() if new_parts is None else {row[0] for row in new_parts.select("event_date").distinct().collect()}
    if not table_exists(spark, path):
        return None, dates
    return read_table(spark, path).where(_parts_judged_with(dates)), dates


def write_partials(judged: DataFrame, path: str, event_dates: set) -> None:
    """Store the parts that are new or whose group changed status (settle_partials' output): a
    MERGE that reads the partitions `read_stored_parts` read for new parts of `event_dates`."""
    changed = judged.where((F.col("group_status") != F.col("status")) | F.col("is_new")).select(
        *PARTIAL_COLUMNS, F.col("group_status").alias("status"), "run_id", "event_date")
    merge(changed, path, ["record_type", "record_key"], update=True, partition_by=PARTIALS_LAYOUT,
          target_filter=_parts_judged_with(event_dates, "t."))


def run(spark: SparkSession, conf: Config, logical_date: date, record: RunRecord | None = None) -> RunRecord:
    """Each silver table is written once. Quarantine and events go before partial_records, so a
    crash in between is repaired by the rerun (the parts are still pending) and loses nothing."""
    from jobs import data_quality

    record = record or RunRecord(STAGE, logical_date)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    bounds = run_bounds(conf, logical_date)
    silver = lambda t: conf.table_path("silver", t)  # noqa: E731
    with audited(spark, conf, record):
        rejected = (read_table(spark, conf.table_path("bronze", "file_manifest"), FILE_MANIFEST)
                    .where((F.col("logical_date") == F.lit(logical_date)) & (F.col("status") != "ingested")))
        rejected_q = quarantine_rows(rejected.select(
            F.col("kind").alias("record_type"), F.col("file_name").alias("source_file"),
            F.lit(0).cast("long").alias("line_number"), F.col("file_name").alias("record_key"),
            F.lit(None).cast("string").alias("raw_record"), "reason_code", "reason_detail"),
            F.col("reason_code"), F.col("reason_detail"), record.run_id, logical_date, now)
        n_rejected = rejected_q.count()
        quarantine_out, events_out = [rejected_q], []
        counts = {"quarantined": 0, "duplicate": 0, "single": 0, "part": 0}
        event_days = set()          # the events' dates: the silver/events partitions their MERGE reads
        typed = read_batch(spark, conf, logical_date)
        batch = others = new_parts = None
        if typed is not None:
            subscribers = read_subscribers(spark, conf.paths.reference, conf.operator.timezone)
            checked = apply_rules(attach_subscriber(typed, F.broadcast(subscribers)), bounds)
            # from the standardised rows, not the checked ones: a key needs neither the subscriber
            # join (which Spark cannot prune away) nor the rules, only bronze's key columns
            tz = conf.operator.timezone
            # kept: their dates choose the index partitions read, then they are matched against those
            occurrences = key_occurrences(typed, tz).persist()
            key_dates = key_event_dates(occurrences)
            repeats = find_repeats(occurrences, read_key_window(spark, silver("record_keys"), key_dates)).persist()
            small = repeats.count() <= BROADCAST_REPEATS_MAX
            batch = classify_once(checked, repeats, broadcast=small)
            outcomes, event_days = tally_outcomes(batch, conf)
            counts.update(outcomes)
            repeats.unpersist()
            occurrences.unpersist()
            others = not_singles(batch)
            record.details["quality"] = data_quality.validate_batches(spark, conf, batch, bounds, record.run_id, logical_date)
            reason = F.coalesce(F.when(F.col("parse_error").isNotNull(), F.lit(R.MALFORMED_ROW)), F.col("reason_code"))
            detail = F.coalesce(F.col("parse_error"), F.col("reason_detail"))
            quarantine_out.append(quarantine_rows(others.where(F.col("outcome") == "quarantined"), reason, detail,
                                                  record.run_id, logical_date, now))
            events_out.append(singles_to_events(batch.where(F.col("outcome") == "single"), conf, record.run_id))
            new_parts = others.where(F.col("outcome") == "part").select(
                *PARTIAL_COLUMNS, F.lit(PENDING).alias("status"), F.lit(record.run_id).alias("run_id"),
                event_date(conf).alias("event_date"))

        partials_path = silver("partial_records")
        ensure_partials_layout(spark, conf, partials_path)
        stored, part_dates = read_stored_parts(spark, partials_path, new_parts)
        judged = None
        if stored is not None or new_parts is not None:
            stored = stored if stored is not None else new_parts.limit(0)
            new_parts = new_parts if new_parts is not None else stored.limit(0)
            judged = settle_partials(stored, new_parts, bounds["partial_expiry_before"]).persist()
            assembled = assemble(judged.where(F.col("group_status") == ASSEMBLED), conf, record.run_id)
            event_days |= {row.event_date for row in assembled.select("event_date").distinct().collect()}
            events_out.append(assembled)
            quarantine_out.append(quarantine_rows(
                judged.where((F.col("group_status") == EXPIRED) & (F.col("status") == PENDING)),
                F.lit(R.PARTIAL_INCOMPLETE),
                F.concat(F.lit("call/session incomplete after the partial timeout: group "), F.col("group_key")),
                record.run_id, logical_date, now))

        merge(reduce(DataFrame.unionByName, quarantine_out), silver("quarantine"), ["quarantine_id"], update=False)
        if batch is not None:
            merge(others.where(F.col("outcome") == "duplicate").select(
                "record_type", "record_key", "source_file", "line_number", "first_source_file", "first_line_number",
                F.lit(record.run_id).alias("run_id"), F.lit(logical_date).alias("logical_date")),
                silver("duplicates"), ["record_type", "source_file", "line_number"], update=False)
            write_record_keys(batch.where(F.col("parse_error").isNull() & F.col("first_source_file").isNull()).select(
                "record_type", "record_key", "source_file", "line_number", F.lit(record.run_id).alias("run_id"),
                F.lit(logical_date).alias("key_date"), event_date(conf).alias("event_date")),
                silver("record_keys"), key_dates, logical_date)
        if events_out:
            merge(reduce(DataFrame.unionByName, events_out), silver("events"), ["event_id"], update=False,
                  partition_by=["event_date"], prune_on="event_date", prune_values=event_days)

        batch_part_status = {}
        if judged is not None:
            # parts that had expired and are now assembled: their quarantine rows are recycled
            revived = judged.where((F.col("group_status") == ASSEMBLED) & (F.col("status") == EXPIRED))
            if revived.limit(1).count():
                update_matched(quarantine_rows(revived, F.lit(R.PARTIAL_INCOMPLETE), F.lit(""), record.run_id, logical_date,
                                               now).select("quarantine_id"),
                               silver("quarantine"), ["quarantine_id"], {"status": f"'{R.RECYCLED}'"})
            write_partials(judged, partials_path, part_dates)
            if counts["part"]:
                after = judged.select("record_type", "record_key", F.col("group_status").alias("status")).unionByName(
                    stored.join(judged.select("record_type", "record_key"), ["record_type", "record_key"], "left_anti")
                    .select("record_type", "record_key", "status"))
                batch_keys = others.where(F.col("outcome") == "part").select("record_type", "record_key")
                batch_part_status = {r.status: r["count"] for r in after.join(batch_keys, ["record_type", "record_key"])
                                     .groupBy("status").count().collect()}
            record.details["partials_open_after"] = judged.where(F.col("group_status") == PENDING).count()
            judged.unpersist()

        record.records_in = sum(counts.values()) + n_rejected
        record.duplicates = counts["duplicate"]
        record.pending = batch_part_status.get(PENDING, 0)
        record.quarantined = counts["quarantined"] + n_rejected + batch_part_status.get(EXPIRED, 0)
        valid = counts["single"] + batch_part_status.get(ASSEMBLED, 0)
        record.rated = valid
        record.details["outcomes"] = {**counts, "rejected_files": n_rejected, "parts": batch_part_status}
        record.check_conservation(valid)
        failed = record.details.get("quality", {}).get("failed")
        if failed:
            raise data_quality.DataQualityError(
                f"batch breached {len(failed)} expectation(s): {'; '.join(failed[:3])}; "
                f"see {record.details['quality']['docs']}")
    return record


def retry_quarantined(suspended: DataFrame, bronze_by_kind: dict[str, DataFrame], subscribers: DataFrame,
                      conf: Config, bounds_by_date: dict[date, dict]) -> DataFrame:
    """Suspended record rows -> their bronze records standardised and judged again (pure).

    Each record is checked against the bounds of the day it was first validated on, so a retry
    never turns a record FUTURE_TIMESTAMP that was not, or the reverse; only reference data is new.
    """
    frames = []
    for kind_name, bronze in bronze_by_kind.items():
        wanted = suspended.where(F.col("record_type") == kind_name).select("source_file", "line_number", "logical_date")
        typed = STANDARDISERS[kind_name](bronze.join(wanted, ["source_file", "line_number"], "left_semi"), conf.operator)
        typed = typed.join(wanted, ["source_file", "line_number"])
        with_account = attach_subscriber(typed, F.broadcast(subscribers))
        for day, bounds in sorted(bounds_by_date.items()):
            frames.append(apply_rules(with_account.where(F.col("logical_date") == F.lit(day)), bounds))
    return reduce(DataFrame.unionByName, frames) if frames else None


RECYCLE_JOB = "recycle_validate"


def recycle(spark: SparkSession, conf: Config, record: RunRecord | None = None) -> RunRecord:
    """Validate the suspended records again whose reason a reference-data fix can clear.

    Those that now pass become events (or parts of a call/session: assembled here when their group
    is complete, otherwise left pending for the daily run) and their quarantine rows are marked
    `recycled`; the others stay `suspended` with the latest reason. The record keys were indexed
    when the records were first seen, so a recycled record can never also arrive as a new event.
    Rating the new events is the rate stage's recycle, which runs right after this.
    """
    record = record or RunRecord(RECYCLE_JOB, None)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    silver = lambda t: conf.table_path("silver", t)  # noqa: E731
    with audited(spark, conf, record):
        suspended = (read_table(spark, silver("quarantine"), QUARANTINE)
                     .where((F.col("stage") == STAGE) & (F.col("status") == R.SUSPENDED)
                            & F.col("reason_code").isin(*R.REFERENCE_DATA_REASONS)))
        # Checkpointed: the quarantine table is updated below and Delta would re-cache this plan.
        suspended = suspended.select("record_type", "source_file", "line_number", "logical_date").localCheckpoint(eager=True)
        days = [r.logical_date for r in suspended.select("logical_date").distinct().collect()]
        bronze_by_kind = {}
        for kind in CDR_KINDS:
            path = conf.table_path("bronze", BRONZE_TABLES[kind.name])
            if table_exists(spark, path):
                bronze_by_kind[kind.name] = read_table(spark, path).where(F.col("ingest_date").isin(*days))
        subscribers = read_subscribers(spark, conf.paths.reference, conf.operator.timezone)
        checked = retry_quarantined(suspended, bronze_by_kind, subscribers, conf,
                                    {day: run_bounds(conf, day) for day in days}) if days else None
        if checked is None:
            record.check_conservation(0)
            return record
        checked = checked.localCheckpoint(eager=True)
        passing = F.col("reason_code").isNull()
        new_parts = checked.where(passing & F.col("is_partial")).select(
            *PARTIAL_COLUMNS, F.lit(PENDING).alias("status"), F.lit(record.run_id).alias("run_id"),
            event_date(conf).alias("event_date"))
        events_out = [singles_to_events(checked.where(passing & ~F.col("is_partial")), conf, record.run_id)]
        partials_path = silver("partial_records")
        part_status = {}
        if new_parts.limit(1).count():
            ensure_partials_layout(spark, conf, partials_path)
            stored, part_dates = read_stored_parts(spark, partials_path, new_parts)
            stored = stored if stored is not None else new_parts.limit(0)
            # expiry is the daily run's decision: a recycle only assembles what is complete
            touched = new_parts.select("record_type", "group_key").distinct()
            judged = (settle_partials(stored, new_parts, datetime(1970, 1, 1)).join(touched, ["record_type", "group_key"],
                                                                                   "left_semi").localCheckpoint(eager=True))
            events_out.append(assemble(judged.where(F.col("group_status") == ASSEMBLED), conf, record.run_id))
            part_status = {r.group_status: r["count"] for r in judged.where(F.col("is_new")).groupBy("group_status")
                           .count().collect()}
        merge(reduce(DataFrame.unionByName, events_out), silver("events"), ["event_id"], update=False,
              partition_by=["event_date"], prune_on="event_date")
        if part_status:
            write_partials(judged, partials_path, part_dates)
        record_attempts(checked.select(
            quarantine_id(STAGE, *_record_quarantine_key()).alias("quarantine_id"),
            F.when(passing, F.lit(R.RECYCLED)).otherwise(F.lit(R.SUSPENDED)).alias("status"), "reason_code",
            "reason_detail", F.lit(now).alias("attempted_at")), silver("quarantine"))
        outcome = {r.ok: r["count"] for r in checked.groupBy(passing.alias("ok")).count().collect()}
        record.records_in = sum(outcome.values())
        record.quarantined = outcome.get(False, 0)
        record.pending = part_status.get(PENDING, 0)
        record.rated = outcome.get(True, 0) - record.pending
        record.details["parts"] = part_status
        record.check_conservation(record.rated)
    return record
