"""Rate: silver/events -> gold/rated_events (+ quarantine for events the rules cannot rate).

Loads and validates the tariff first: an invalid plan raises before anything is rated. Each
load that changes the rules is recorded in gold/tariff_versions; rated events carry it.
Events nobody pays for are kept at cost 0 with chargeable = false. A day's run rates the events
that day's validate runs wrote; `recycle` sweeps up any other event left unrated in the last
validation.max_event_age_days (older ones validate quarantines as STALE_EVENT), and those
validate's recycle released, however old. Idempotent: events already rated (or suspended in
quarantine, awaiting `recycle`) are not rated again; writes are MERGEs.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import validate
from jobs.common.audit import RunRecord, audited, not_written_by_other_days_runs_of, written_by_runs_of
from jobs.common.config import Config
from jobs.common.delta_io import merge, read_table, tally_with_partition_values
from jobs.common.quarantine import quarantine_id, record_attempts, to_quarantine
from jobs.rating import CompiledTariff, rate_events, small_generated_methods
from jobs.tariff import Tariff, load_tariff
from schemas import reason_codes as R
from schemas.tables import ADJUSTMENTS, COST, EVENTS, INVOICE_LINE_EVENTS, INVOICES, QUARANTINE, RATED_EVENTS

STAGE = "rate"
QUARANTINE_KEY = ["event_id"]          # one rating-quarantine row per event
# an event's columns that its rated row does not store, only its quarantine row (in event_json); a
# rated row's run_id is the rating run's, not the event's
UNRATED_ONLY = [name for name in EVENTS.fieldNames() if name not in RATED_EVENTS.fieldNames()] + ["run_id"]


def keyed_hash(value: Column, key: str) -> Column:
    return F.substring(F.sha2(F.concat(F.lit(key), F.lit("|"), value), 256), 1, 16)


def public_source_keys(record_type: Column, source_keys: Column, conf: Config) -> Column:
    """The SMS key ends in the subscriber's number: in gold it carries a keyed hash instead."""
    if conf.privacy.expose_numbers:
        return source_keys
    hashed = F.transform(source_keys, lambda k: F.concat(
        F.regexp_extract(k, r"^(.*\|)[^|]*$", 1), keyed_hash(F.regexp_extract(k, r"\|([^|]*)$", 1), conf.privacy.hash_key)))
    return F.when(record_type == "sms", hashed).otherwise(source_keys)


def price(events: DataFrame, tariff: CompiledTariff, conf: Config) -> DataFrame:
    """All events -> rating columns; nobody-pays events at cost 0 without a tariff lookup."""
    chargeable = events.where(F.col("chargeable"))
    free = events.where(~F.col("chargeable")).select(
        *events.columns, F.lit(None).cast("string").alias("rating_reason"), F.lit(None).cast("string").alias("rating_detail"),
        F.lit(None).cast("string").alias("destination_id"), F.lit(None).cast("string").alias("rating_plan_id"),
        F.lit(0).cast("decimal(30,18)").alias("cost_exact"), F.lit(0).cast("decimal(30,18)").alias("cost_rounded"))
    return rate_events(chargeable, tariff, conf.operator.timezone).unionByName(free)


def narrow_for_writes(priced: DataFrame) -> DataFrame:
    """The priced events as the run's writes read them: the columns a rated row does not store
    (numbers, network fields, source files, the validate run's id) kept only on the events that
    could not be rated, whose quarantine row carries the whole event."""
    unrated = F.col("rating_reason").isNotNull()
    return priced.withColumns({name: F.when(unrated, F.col(name)) for name in UNRATED_ONLY})


def price_now(events: DataFrame, tariff: CompiledTariff, conf: Config) -> DataFrame:
    """`price`, computed once and cut from its inputs (the callers then write tables it read), in
    the small generated methods the rating code needs to be JIT-compiled."""
    with small_generated_methods(events.sparkSession):
        return narrow_for_writes(price(events, tariff, conf)).localCheckpoint(eager=True)


def to_rated_rows(priced: DataFrame, conf: Config, tariff_version: str, run_id: str, now: datetime) -> DataFrame:
    return priced.where(F.col("rating_reason").isNull()).select(
        "event_id", "record_type", public_source_keys(F.col("record_type"), F.col("source_keys"), conf).alias("source_keys"),
        "account_id", "event_start", "event_date", "usage", "usage_unit", "chargeable", "category", "destination_id",
        "rating_plan_id", F.col("cost_rounded").cast(COST).alias("cost"), "cost_exact", "currency",
        F.lit(tariff_version).alias("tariff_version"), F.lit(now).alias("rated_at"), F.lit(run_id).alias("run_id"))


def to_quarantine_rows(priced: DataFrame, run_id: str, logical_date: date | None, now: datetime) -> DataFrame:
    return to_quarantine(
        priced.where(F.col("rating_reason").isNotNull()), stage=STAGE, quarantine_key=QUARANTINE_KEY,
        source_file=F.element_at("source_files", 1), line_number=F.lit(None), record_key=F.col("event_id"),
        raw_record=F.lit(None), event_json=F.to_json(F.struct(*[F.col(c) for c in EVENTS.fieldNames()])),
        reason_code=F.col("rating_reason"), reason_detail=F.col("rating_detail"), run_id=run_id,
        logical_date=logical_date, now=now)


def record_tariff_version(spark: SparkSession, conf: Config, tariff: Tariff) -> None:
    row = (tariff.version, tariff.folder, datetime.now(timezone.utc).replace(tzinfo=None),
           json.dumps({"destinations": len(tariff.destinations), "rates": len(tariff.rates),
                       "rating_plans": len(tariff.rating_plans), "profiles": len(tariff.profiles)}))
    frame = spark.createDataFrame([row], "tariff_version string, rules_path string, loaded_at timestamp, summary string")
    merge(frame, conf.table_path("gold", "tariff_versions"), ["tariff_version"], update=False)


def load_rules(spark: SparkSession, conf: Config) -> tuple[Tariff, CompiledTariff]:
    tariff = load_tariff(conf.paths.rules, conf.operator.timezone)
    record_tariff_version(spark, conf, tariff)
    return tariff, CompiledTariff(spark, tariff, conf.operator.tenant)


def write_rated(rated: DataFrame, conf: Config, update: bool = False, event_days: set | None = None,
                logical_date: date | None = None) -> None:
    """MERGE rated rows on event_id, reading only their days' partitions (`event_days` where the
    caller has counted them, else found by a pass over `rated`). A day's rating (`logical_date`)
    matches them only with rows its day's events can have (`days_events`): not other days'."""
    merge(rated, conf.table_path("gold", "rated_events"), ["event_id"], update=update, partition_by=["event_date"],
          prune_on="event_date", prune_values=event_days,
          target_filter=not_written_by_other_days_runs_of(STAGE, logical_date, "t.run_id") if logical_date else None)


def _unrated(spark: SparkSession, conf: Config, events: DataFrame, rated_on: Column) -> DataFrame:
    """`events` neither rated (among the rated rows `rated_on` selects) nor waiting in rating
    quarantine for `recycle`."""
    # an event's rated row carries its event_date: `rated_on` picks partitions
    rated = read_table(spark, conf.table_path("gold", "rated_events"), RATED_EVENTS).where(rated_on).select("event_id")
    waiting = (read_table(spark, conf.table_path("silver", "quarantine"), QUARANTINE)
               .where((F.col("stage") == STAGE) & (F.col("status") == R.SUSPENDED)).select(F.col("record_key").alias("event_id")))
    # Nothing rated to exclude (a day's first attempt): the join would still shuffle and sort every
    # event, all its columns, to find that out (at 1M events ~3 s of a 20 s pricing pass).
    unrated = events if rated.isEmpty() else events.join(rated, "event_id", "left_anti")
    return unrated.join(waiting, "event_id", "left_anti")


def _on_dates_of(events: DataFrame) -> Column:
    """Rows of the event dates `events` holds (a pass that finds them): the partitions of
    gold/rated_events their rated rows can be in."""
    dates = [row.event_date for row in events.select("event_date").distinct().collect()]
    return F.col("event_date").isin(dates) if dates else F.lit(False)


def unrated_events(spark: SparkSession, conf: Config, since: date) -> DataFrame:
    """Events no run has rated: what `recycle` sweeps up. Those from `since` on (a day whose rating
    never ran), and of any date those validate's recycle released: a record suspended for
    reference data is released when the CRM is fixed, which can be months after its call, and
    nothing else would ever rate it. Reads every partition since, and of the older ones only the
    files validate's recycle runs wrote (silver/events keeps run_id statistics)."""
    table = read_table(spark, conf.table_path("silver", "events"), EVENTS)
    in_lookback = F.col("event_date") >= F.lit(since)
    released_earlier = table.where(~in_lookback & written_by_runs_of(validate.RECYCLE_JOB, None))
    return _unrated(spark, conf, table.where(in_lookback).unionByName(released_earlier),
                    in_lookback | _on_dates_of(released_earlier))


def days_events(spark: SparkSession, conf: Config, logical_date: date) -> DataFrame:
    """The events the validate runs of `logical_date` wrote (every attempt's), not yet rated: what
    a day's rating covers. Only those runs' files are read (silver/events keeps run_id statistics)
    and the rated rows only of those events' dates, so the cost is the day's, however many days
    the tables hold; the lookback scan it replaced read 62 days of both every run. Still within the
    lookback's partitions: a table whose older files lack run_id statistics (written before they
    were kept) costs what it did before, and the day after those files age out, no more.
    Of those dates' rated rows, the files other days' rating runs wrote are skipped too: they
    rated other days' events. What is left is this day's earlier attempts, `recycle` and `rerate`:
    nothing at all on a day's first attempt, when the events are then not joined with it."""
    in_lookback = F.col("event_date") >= F.lit(logical_date - timedelta(days=conf.validation.max_event_age_days))
    events = read_table(spark, conf.table_path("silver", "events"), EVENTS).where(
        in_lookback & written_by_runs_of(validate.STAGE, logical_date))
    return _unrated(spark, conf, events, _on_dates_of(events) & not_written_by_other_days_runs_of(STAGE, logical_date))


def rate_and_write(todo: DataFrame, compiled: CompiledTariff, tariff_version: str, conf: Config, run_id: str,
                   logical_date: date | None, now: datetime) -> dict[str | None, int]:
    """Price `todo`, MERGE the rated rows and quarantine the rest: {reason (None: rated): count}."""
    # Checkpointed, not persisted: `todo` reads rated_events, and Delta re-caches every plan on a
    # path it writes, so a persisted `priced` was rated a second time after the MERGE below
    # (half of this stage's time at 1M events, and against the table's new state).
    priced = price_now(todo, compiled, conf)
    outcome, rated_days = tally_with_partition_values(priced, "rating_reason", F.col("rating_reason").isNull(),
                                                      F.col("event_date"))
    write_rated(to_rated_rows(priced, conf, tariff_version, run_id, now), conf, event_days=rated_days,
                logical_date=logical_date)
    # Most runs rate every event: a MERGE of no rows would still read every quarantine id ever kept
    # (into a year of 10M-event days, 36.6M rows: 2.9 s and 13.9 s)
    if any(reason is not None for reason in outcome):
        merge(to_quarantine_rows(priced, run_id, logical_date, now), conf.table_path("silver", "quarantine"),
              ["quarantine_id"], update=False)
    return outcome


def run(spark: SparkSession, conf: Config, logical_date: date, record: RunRecord | None = None) -> RunRecord:
    record = record or RunRecord(STAGE, logical_date)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with audited(spark, conf, record):
        tariff, compiled = load_rules(spark, conf)
        record.details["tariff_version"] = tariff.version
        todo = days_events(spark, conf, logical_date)
        outcome = rate_and_write(todo, compiled, tariff.version, conf, record.run_id, logical_date, now)
        record.details["quarantined_by_reason"] = {k: v for k, v in outcome.items() if k is not None}
        record.records_in = sum(outcome.values())
        record.rated = outcome.get(None, 0)
        record.quarantined = record.records_in - record.rated
        record.check_conservation(record.rated)
    return record


def recycle(spark: SparkSession, conf: Config, record: RunRecord | None = None, today: date | None = None) -> RunRecord:
    """Rate the suspended rating-quarantine events again with the current rules, and the events
    no run has rated yet (those the validate stage's recycle has just released, however old, and
    any other left unrated in the validation.max_event_age_days before `today`, the UTC date by
    default)."""
    record = record or RunRecord("recycle", None)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    qpath = conf.table_path("silver", "quarantine")
    with audited(spark, conf, record):
        tariff, compiled = load_rules(spark, conf)
        suspended = read_table(spark, qpath, QUARANTINE).where((F.col("stage") == STAGE) & (F.col("status") == R.SUSPENDED))
        events = suspended.select(F.from_json("event_json", EVENTS).alias("e")).select("e.*")
        priced = price_now(events, compiled, conf)
        write_rated(to_rated_rows(priced, conf, tariff.version, record.run_id, now), conf)
        retried = {r.ok: r["count"] for r in priced.groupBy((F.col("rating_reason").isNull()).alias("ok")).count().collect()}
        if retried:
            record_attempts(priced.select(
                quarantine_id(STAGE, *QUARANTINE_KEY).alias("quarantine_id"),
                F.when(F.col("rating_reason").isNull(), F.lit(R.RECYCLED)).otherwise(F.lit(R.SUSPENDED)).alias("status"),
                F.col("rating_reason").alias("reason_code"), F.col("rating_detail").alias("reason_detail"),
                F.lit(now).alias("attempted_at")), qpath)
        since = (today or datetime.now(timezone.utc).date()) - timedelta(days=conf.validation.max_event_age_days)
        fresh = rate_and_write(unrated_events(spark, conf, since), compiled, tariff.version, conf, record.run_id, None, now)
        record.details.update({"tariff_version": tariff.version, "retried": sum(retried.values()),
                               "newly_rated": sum(fresh.values())})
        record.records_in = sum(retried.values()) + sum(fresh.values())
        record.rated = retried.get(True, 0) + fresh.get(None, 0)
        record.quarantined = record.records_in - record.rated
        record.check_conservation(record.rated)
    return record


def rerate(spark: SparkSession, conf: Config, date_from: date, date_to: date, dry_run: bool = False,
           record: RunRecord | None = None) -> RunRecord:
    """Rate the rated events of [date_from, date_to] again with the current rules.

    Events whose price changed are updated in gold/rated_events. Where such an event is already on
    an issued invoice, that invoice stays as issued and the difference (new − previous cost) goes
    to gold/adjustments, which the account's next bill run puts on an `adjustment` line. An event
    the current rules cannot rate keeps its previous rating and is counted (`not_ratable_now`).
    Rerunning with the same rules changes nothing. `dry_run` computes the same report, writes nothing.
    """
    record = record or RunRecord("rerate", None)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    in_range = (F.col("event_date") >= F.lit(date_from)) & (F.col("event_date") <= F.lit(date_to))
    with audited(spark, conf, record):
        tariff, compiled = load_rules(spark, conf)
        rated_path = conf.table_path("gold", "rated_events")
        current = read_table(spark, rated_path, RATED_EVENTS).where(in_range)
        events = (read_table(spark, conf.table_path("silver", "events"), EVENTS).where(in_range)
                  .join(current.select("event_id"), "event_id", "left_semi"))
        priced = price_now(events, compiled, conf)
        fresh = to_rated_rows(priced, conf, tariff.version, record.run_id, now)
        previous = current.select("event_id", F.col("cost").alias("previous_cost"),
                                  F.col("tariff_version").alias("previous_tariff_version"),
                                  F.col("destination_id").alias("previous_destination"),
                                  F.col("rating_plan_id").alias("previous_plan"))
        changed = (fresh.join(previous, "event_id")
                   .where((F.col("cost") != F.col("previous_cost"))
                          | ~F.col("destination_id").eqNullSafe(F.col("previous_destination"))
                          | ~F.col("rating_plan_id").eqNullSafe(F.col("previous_plan"))))
        # Cut the lineage: the MERGE below writes the table this frame was read from.
        changed = changed.localCheckpoint(eager=True)
        invoices = read_table(spark, conf.table_path("gold", "invoices"), INVOICES).select("invoice_id")
        invoiced = (read_table(spark, conf.table_path("gold", "invoice_line_events"), INVOICE_LINE_EVENTS)
                    .join(invoices, "invoice_id", "left_semi").select("event_id"))
        adjustments = (changed.where(F.col("cost") != F.col("previous_cost")).join(invoiced, "event_id", "left_semi")
                       .select(F.sha2(F.concat_ws("|", "event_id", "previous_tariff_version", "tariff_version",
                                                  F.col("previous_cost").cast("string"), F.col("cost").cast("string")),
                                      256).substr(1, 24).alias("adjustment_id"),
                               "event_id", "account_id", "category", "destination_id", "event_start",
                               F.col("previous_cost").cast(COST).alias("previous_cost"), F.col("cost").alias("new_cost"),
                               (F.col("cost") - F.col("previous_cost")).cast(COST).alias("amount"), "currency",
                               "previous_tariff_version", "tariff_version", F.lit(now).alias("created_at"),
                               F.lit(record.run_id).alias("run_id"))).localCheckpoint(eager=True)
        by_currency = {r.currency: str(r.delta) for r in changed.groupBy("currency").agg(
            F.sum(F.col("cost") - F.col("previous_cost")).alias("delta")).collect()}
        record.records_in = priced.count()
        record.pending = priced.where(F.col("rating_reason").isNotNull()).count()
        record.rated = record.records_in - record.pending
        record.details.update({
            "from": date_from.isoformat(), "to": date_to.isoformat(), "dry_run": dry_run, "tariff_version": tariff.version,
            "changed": changed.count(), "adjustments": adjustments.count(), "cost_delta_by_currency": by_currency,
            "not_ratable_now": record.pending})
        if not dry_run:
            if record.details["changed"]:
                write_rated(changed.select(*RATED_EVENTS.fieldNames()), conf, update=True)
            if record.details["adjustments"]:
                merge(adjustments.select(*ADJUSTMENTS.fieldNames()), conf.table_path("gold", "adjustments"),
                      ["adjustment_id"], update=False)
        priced.unpersist()
        record.check_conservation(record.rated)
    return record
