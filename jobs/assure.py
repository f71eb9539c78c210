"""Usage assurance: the network's counters against the CDRs, per object and 15-minute period.

Stage of `run-day` after rating. Each run
1. types the day's bronze counter values into `silver/traffic_measurements` (bad values to
   quarantine with a reason, a value re-delivered in a later file replaces the earlier one);
2. compares counters with the same metrics derived from `silver/events` over the local days
   `[D - settle_days, D]` into `gold/usage_assurance` (rows of D stay provisional until late CDRs
   had `settle_days` more runs to arrive);
3. summarises each object's settled day into `gold/usage_assurance_daily` with the leakage
   valued at the object's average rated price, writes a text summary and a PNG chart under
   `paths.reports`, and fails with the worst objects named when the unbilled share of carried
   seconds or octets exceeds `assurance.leakage_budget_pct`.

How the CDR side counts (the counters' definitions, TS 32.435 / landing-formats.md): answered
outgoing calls by answer time; conversation seconds spread over every period a call spans;
data octets (uplink + downlink) by the session's opening time, since an assembled session
carries no finer timing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import measurements
from jobs.common.audit import RunRecord, audited
from jobs.common.config import AssuranceSettings, Config
from jobs.common.delta_io import merge, read_table, replace_where, table_exists
from jobs.common.expressions import local_date, local_midnight_utc, lookup
from jobs.common.quarantine import to_quarantine
from schemas.landing import (
    METRIC_ANSWERED_CALLS, METRIC_CONVERSATION_SECONDS, METRIC_DATA_OCTETS, PERIOD_SECONDS, TRAFFIC,
)
from schemas.tables import (
    BRONZE_TABLES, EVENTS, RATED_EVENTS, TRAFFIC_MEASUREMENTS, USAGE_ASSURANCE, USAGE_ASSURANCE_DAILY,
)

STAGE = "assure"
OK, MISMATCH, MISSING_CDRS, MISSING_COUNTERS = "ok", "mismatch", "missing_cdrs", "missing_counters"
# the metrics whose unbilled share is leakage (calls are reported, seconds and octets are money)
VOLUME_METRICS = {METRIC_CONVERSATION_SECONDS: "s", METRIC_DATA_OCTETS: "bytes"}


class AssuranceBreach(RuntimeError):
    """More carried traffic went unbilled than the leakage budget allows; names the worst objects."""


def _period(ts: Column) -> Column:
    return F.timestamp_seconds(F.floor(F.unix_seconds(ts) / PERIOD_SECONDS) * PERIOD_SECONDS)


def cdr_metrics(events: DataFrame) -> DataFrame:
    """silver events -> object_type, object_id, metric, period_start, value (only values > 0)."""
    calls = events.where((F.col("record_type") == "voice") & F.col("chargeable") & F.col("msc_outgoing_tkgp").isNotNull())
    answered = calls.select(F.lit("trunk_group").alias("object_type"), F.col("msc_outgoing_tkgp").alias("object_id"),
                            F.lit(METRIC_ANSWERED_CALLS).alias("metric"), _period(F.col("event_start")).alias("period_start"),
                            F.lit(1).cast("long").alias("value"))
    start = F.unix_seconds("event_start")
    end = start + F.col("usage")
    spans = calls.where(F.col("usage") > 0).select(
        "msc_outgoing_tkgp", start.alias("s"), end.alias("e"),
        F.explode(F.sequence(F.floor(start / PERIOD_SECONDS), F.floor((end - 1) / PERIOD_SECONDS))).alias("p"))
    p_start = F.col("p") * PERIOD_SECONDS
    seconds = spans.select(
        F.lit("trunk_group").alias("object_type"), F.col("msc_outgoing_tkgp").alias("object_id"),
        F.lit(METRIC_CONVERSATION_SECONDS).alias("metric"), F.timestamp_seconds(p_start).alias("period_start"),
        (F.least("e", p_start + PERIOD_SECONDS) - F.greatest("s", p_start)).cast("long").alias("value"))
    octets = events.where((F.col("record_type") == "data") & F.col("apn").isNotNull()).select(
        F.lit("apn").alias("object_type"), F.col("apn").alias("object_id"), F.lit(METRIC_DATA_OCTETS).alias("metric"),
        _period(F.col("event_start")).alias("period_start"), F.col("usage").cast("long").alias("value"))
    keys = ["object_type", "object_id", "metric", "period_start"]
    return (answered.unionByName(seconds).unionByName(octets).groupBy(*keys)
            .agg(F.sum("value").alias("value")).where(F.col("value") > 0))


def network_metrics(measured: DataFrame) -> DataFrame:
    """silver traffic_measurements -> one value per object, metric and period (uplink + downlink summed)."""
    return (measured.where(F.col("metric").isNotNull())
            .groupBy("object_type", "object_id", "metric", "period_start")
            .agg(F.sum("value").alias("value"), F.bool_or("suspect").alias("suspect")))


def compare(network: DataFrame, cdr: DataFrame, settings: AssuranceSettings) -> DataFrame:
    """Full comparison; status per the rules in the module doc, difference = network - cdr."""
    keys = ["object_type", "object_id", "metric", "period_start"]
    joined = (network.select(*keys, F.col("value").alias("network_value"), "suspect")
              .join(cdr.select(*keys, F.col("value").alias("cdr_value")), keys, "full"))
    absolute = F.coalesce(lookup(settings.absolute_tolerance, F.col("metric")), F.lit(0))
    cdr_value = F.coalesce("cdr_value", F.lit(0))
    difference = F.col("network_value") - cdr_value
    allowed = F.greatest(absolute.cast("double"),
                         F.greatest("network_value", cdr_value).cast("double") * settings.tolerance_pct / 100)
    status = (F.when(F.col("network_value").isNull(), F.lit(MISSING_COUNTERS))
              .when(F.abs(difference).cast("double") <= allowed, F.lit(OK))
              .when(cdr_value == 0, F.lit(MISSING_CDRS))
              .otherwise(F.lit(MISMATCH)))
    pct = F.when(F.col("network_value") > 0, F.round(difference.cast("decimal(38,6)") * 100 / F.col("network_value"), 2))
    return joined.select(
        "object_id", "object_type", "period_start", "metric", "network_value",
        cdr_value.cast("long").alias("cdr_value"), difference.alias("difference"),
        pct.cast("decimal(12,2)").alias("difference_pct"), status.alias("status"),
        F.coalesce("suspect", F.lit(False)).alias("suspect"))


def counts_as_leak(comparison: DataFrame) -> Column:
    """A flagged, trustworthy row: suspect counters are reported, never counted."""
    return F.col("status").isin(MISMATCH, MISSING_CDRS) & ~F.col("suspect")


def daily_summary(comparison: DataFrame, rated_by_object: DataFrame) -> DataFrame:
    """Per local day, object and volume metric: carried, billed, leakage (units, %, money per currency).

    rated_by_object: local_date, object_id, currency, cost, usage (the object's rated events).
    Leakage money = leakage x cost_c / usage over all currencies: the unbilled units priced at
    the object's average rate, split by the share each currency was billed in. Rounded half-up
    to 4 decimals: an estimate, not an amount that is invoiced.
    """
    volume = comparison.where(F.col("metric").isin(*VOLUME_METRICS))
    unit = lookup(VOLUME_METRICS, F.col("metric"))
    unbilled = F.when(counts_as_leak(comparison), F.greatest(F.col("difference"), F.lit(0))).otherwise(F.lit(0))
    per_object = volume.groupBy("local_date", "object_id", "object_type", "metric").agg(
        F.sum(F.coalesce("network_value", F.lit(0))).alias("carried"), F.sum("cdr_value").alias("billed"),
        F.sum(unbilled).alias("leakage"), F.sum(F.when(counts_as_leak(comparison), 1).otherwise(0)).alias("flagged_periods"),
        F.bool_and("settled").alias("settled"))
    totals = rated_by_object.groupBy("local_date", "object_id").agg(F.sum("usage").alias("usage_total"))
    priced = rated_by_object.join(totals, ["local_date", "object_id"])
    summary = per_object.join(priced, ["local_date", "object_id"], "left")
    rate = F.when(F.col("usage") > 0, F.col("cost").cast("decimal(38,18)") / F.col("usage"))
    value = F.when(F.col("usage_total") > 0,
                   F.round(F.col("leakage").cast("decimal(38,18)") * F.col("cost") / F.col("usage_total"), 4))
    pct = F.when(F.col("carried") > 0, F.round(F.col("leakage").cast("decimal(38,6)") * 100 / F.col("carried"), 2))
    return summary.select(
        "local_date", "object_id", "object_type", "metric", unit.alias("unit"), F.col("carried").cast("long").alias("carried"),
        F.col("billed").cast("long").alias("billed"), F.col("leakage").cast("long").alias("leakage"),
        pct.cast("decimal(12,2)").alias("leakage_pct"), F.col("flagged_periods").cast("long").alias("flagged_periods"),
        "currency", rate.cast("decimal(30,12)").alias("average_rate"), value.cast("decimal(20,4)").alias("leakage_value"),
        "settled")


@dataclass
class Verdict:
    local_date: date
    breaches: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def judge(summary_rows: list, budget_pct: float, day: date) -> Verdict:
    """Leakage share per volume metric on the settled day; the worst objects named on a breach."""
    verdict = Verdict(day)
    for metric, unit in VOLUME_METRICS.items():
        rows = [r for r in summary_rows if r.metric == metric]
        per_object: dict[str, tuple[int, int]] = {}
        for r in rows:                                   # one row per currency: units repeat
            per_object[r.object_id] = (r.carried, r.leakage)
        carried = sum(c for c, _ in per_object.values())
        leaked = sum(lk for _, lk in per_object.values())
        share = Decimal(leaked * 100) / carried if carried else Decimal(0)
        money: dict[str, Decimal] = {}
        for r in rows:
            if r.currency and r.leakage_value:
                money[r.currency] = money.get(r.currency, Decimal(0)) + r.leakage_value
        worth = ", ".join(f"{c} {v:.2f}" for c, v in sorted(money.items())) or "no rated price"
        verdict.lines.append(f"{metric}: carried {carried:,} {unit}, unbilled {leaked:,} {unit} "
                             f"({share:.2f} %), worth about {worth}")
        worst = sorted(((lk, obj, c) for obj, (c, lk) in per_object.items() if lk > 0), reverse=True)
        for lk, obj, c in worst[:5]:
            verdict.lines.append(f"  {obj}: {lk:,} of {c:,} {unit} unbilled ({Decimal(lk * 100) / c:.1f} %)")
        if share > Decimal(str(budget_pct)):
            named = ", ".join(f"{obj} ({lk:,} {unit})" for lk, obj, _ in worst[:3])
            verdict.breaches.append(f"{metric} leakage {share:.2f} % > budget {budget_pct} % on {day}: worst {named}")
    return verdict


def local_day_bounds(day_from: date, day_to: date, tz: str) -> tuple[datetime, datetime]:
    """UTC [start of day_from, end of day_to) in the operator's zone (23- and 25-hour days included)."""
    return local_midnight_utc(day_from, tz), local_midnight_utc(day_to + timedelta(days=1), tz)


def standardise_traffic(spark: SparkSession, conf: Config, logical_date: date, record: RunRecord, now: datetime) -> None:
    """Bronze counter values ingested on the day -> silver/traffic_measurements + quarantine."""
    path = conf.table_path("bronze", BRONZE_TABLES[TRAFFIC.name])
    if not table_exists(spark, path):
        record.check_conservation(0)
        return
    typed = measurements.standardise(read_table(spark, path).where(F.col("ingest_date") == F.lit(logical_date))).persist()
    bad = typed.where(F.col("reason_code").isNotNull())
    kept, superseded = measurements.latest_per_counter(typed.where(F.col("reason_code").isNull()))
    line = F.col("line_number").cast("string")
    quarantined = to_quarantine(
        bad.withColumn("record_type", F.lit(TRAFFIC.name)), stage=STAGE,
        quarantine_key=["record_type", "source_file", line], source_file=F.col("source_file"),
        line_number=F.col("line_number"), record_key=F.concat_ws("|", "meas_obj_ldn", "counter", "period_end"),
        raw_record=F.col("raw_record"), event_json=F.lit(None), reason_code=F.col("reason_code"),
        reason_detail=F.col("reason_detail"), run_id=record.run_id, logical_date=logical_date, now=now)
    counts = {r.outcome: r["count"] for r in typed.select(
        F.when(F.col("reason_code").isNotNull(), "quarantined").otherwise("usable").alias("outcome"))
        .groupBy("outcome").count().collect()}
    n_superseded = superseded.count()
    if counts.get("quarantined"):
        merge(quarantined, conf.table_path("silver", "quarantine"), ["quarantine_id"], update=False)
    merge(kept.select(*TRAFFIC_MEASUREMENTS.fieldNames()), conf.table_path("silver", "traffic_measurements"),
          ["meas_obj_ldn", "counter", "period_start"], update=True)
    typed.unpersist()
    record.records_in = sum(counts.values())
    record.quarantined = counts.get("quarantined", 0)
    record.duplicates = n_superseded
    record.rated = counts.get("usable", 0) - n_superseded
    record.check_conservation(record.rated)


def _rated_by_object(spark: SparkSession, conf: Config, events: DataFrame, event_dates: Column) -> DataFrame:
    """The rated cost and usage of `events` per local day, object and currency; `event_dates` picks
    the rated_events partitions their rows are in (the table holds every day ever rated)."""
    rated = read_table(spark, conf.table_path("gold", "rated_events"), RATED_EVENTS).where(event_dates & F.col("chargeable"))
    objects = events.select("event_id", F.coalesce("msc_outgoing_tkgp", "apn").alias("object_id")).where("object_id IS NOT NULL")
    tz = conf.operator.timezone
    return (rated.join(objects, "event_id")
            .groupBy(local_date(F.col("event_start"), tz).alias("local_date"), "object_id", "currency")
            .agg(F.sum("cost").alias("cost"), F.sum("usage").alias("usage")))


def run(spark: SparkSession, conf: Config, logical_date: date, record: RunRecord | None = None) -> RunRecord:
    from jobs import assurance_report

    record = record or RunRecord(STAGE, logical_date)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    settings = conf.assurance
    first_day = logical_date - timedelta(days=settings.settle_days)
    settled_day = first_day
    lo, hi = local_day_bounds(first_day, logical_date, conf.operator.timezone)
    tz = conf.operator.timezone
    with audited(spark, conf, record):
        standardise_traffic(spark, conf, logical_date, record, now)
        measured = read_table(spark, conf.table_path("silver", "traffic_measurements"), TRAFFIC_MEASUREMENTS).where(
            (F.col("period_start") >= F.lit(lo)) & (F.col("period_start") < F.lit(hi)))
        longest_call = timedelta(seconds=conf.validation.max_call_duration_s)
        # the operator-zone dates those starts have: partitions to read, not every day ever rated
        earliest = (lo - longest_call).replace(tzinfo=timezone.utc).astimezone(ZoneInfo(tz)).date()
        event_dates = F.col("event_date").between(earliest, logical_date)
        events = read_table(spark, conf.table_path("silver", "events"), EVENTS).where(
            event_dates & (F.col("event_start") >= F.lit(lo - longest_call)) & (F.col("event_start") < F.lit(hi)))
        cdr = cdr_metrics(events).where((F.col("period_start") >= F.lit(lo)) & (F.col("period_start") < F.lit(hi)))
        comparison = (compare(network_metrics(measured), cdr, settings)
                      .withColumn("local_date", local_date(F.col("period_start"), tz))
                      .withColumn("settled", F.col("local_date") <= F.lit(settled_day))
                      .withColumn("run_id", F.lit(record.run_id))
                      .select(*USAGE_ASSURANCE.fieldNames())).localCheckpoint(eager=True)
        window = f"local_date >= '{first_day.isoformat()}' AND local_date <= '{logical_date.isoformat()}'"
        replace_where(comparison, conf.table_path("gold", "usage_assurance"), window)
        summary = (daily_summary(comparison, _rated_by_object(spark, conf, events, event_dates))
                   .withColumn("run_id", F.lit(record.run_id)).select(*USAGE_ASSURANCE_DAILY.fieldNames())
                   .localCheckpoint(eager=True))
        replace_where(summary, conf.table_path("gold", "usage_assurance_daily"), window)
        statuses = {r.status: r["count"] for r in comparison.where(F.col("local_date") == F.lit(settled_day))
                    .groupBy("status").count().collect()}
        verdict = judge(summary.where(F.col("local_date") == F.lit(settled_day)).collect(),
                        settings.leakage_budget_pct, settled_day)
        report = assurance_report.write(Path(conf.paths.reports), verdict, statuses,
                                        comparison.where((F.col("local_date") == F.lit(settled_day))
                                                         & F.col("metric").isin(*VOLUME_METRICS)),
                                        settings.plot_objects)
        record.details["assurance"] = {"settled_day": settled_day.isoformat(), "statuses": statuses,
                                       "summary": verdict.lines, "breaches": verdict.breaches, "report": str(report)}
        print(f"usage assurance for {settled_day} (settled; {logical_date} provisional): "
              + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
        for line in verdict.lines:
            print("  " + line)
        print(f"  report: {report}")
        if verdict.breaches:
            raise AssuranceBreach("; ".join(verdict.breaches) + f"; see {report}")
    return record
