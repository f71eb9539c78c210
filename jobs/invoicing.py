"""Invoice arithmetic (rating.md, "Invoice arithmetic"): pure DataFrame transforms, no I/O.

Where money is rounded, and how:
* Rated event costs arrive already rounded by their tariff (jobs/rating.py); they are summed exactly.
* Every invoice line is rounded **once**, half up (away from zero for negatives), to the ISO 4217
  minor units of the account's currency (`round_minor`), from the exact sum of what it covers.
* Recurring fee: `RecurringFee × days valid / days in period`, exact, then rounded per line.
* Bundle allowance (the project's rule): events draw on the account's bundles in order of event
  start, then event id, so arrival order never matters. An event draws on one bundle: the one
  naming its destination before a `*any` one, then the lowest BundleId. The covered value of an
  event is its cost (connect fee included) × covered units ÷ usage, half up at 10 fractional
  digits (the cost's own scale); a fully covered event's covered value is exactly its cost. Each
  bundle gives one negative `allowance` line. Every number on a plan with a bundle brings that
  bundle's full units to the account's pool for the period (not prorated). Late usage draws on no
  bundle: its period's allowance was settled on the earlier invoice.
* Tax: `Rate × sum of the invoice's (already rounded) non-tax lines of the category`, rounded
  per tax line; no line when that sum is 0.
"""
from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.common.config import PrivacySettings
from jobs.common.expressions import local_midnight_utc
from schemas import reason_codes as R
from schemas.tables import AMOUNT, COST, QUANTITY

LINE_ORDER = {"recurring": 1, "usage": 2, "allowance": 3, "late_usage": 4, "adjustment": 5, "tax": 6}
USAGE_LINE_TYPES = ("usage", "late_usage")
FEE = "decimal(18,8)"
TAX_RATE = "decimal(12,8)"   # keeps base × rate within 38 digits, so Spark never trims its scale


@lru_cache(maxsize=1)
def minor_units() -> dict[str, int]:
    """ISO 4217 minor-unit digits from the maintained `iso4217` package (not CLDR/babel)."""
    from iso4217 import Currency

    return {c.code: int(c.exponent) for c in Currency if c.exponent is not None}


def round_minor_value(amount: Decimal, currency: str) -> Decimal:
    """Python twin of `round_minor`, for views and tests."""
    return amount.quantize(Decimal(1).scaleb(-minor_units()[currency]), rounding=ROUND_HALF_UP)


def currency_digits(spark: SparkSession) -> DataFrame:
    """currency -> minor_digits, small enough to broadcast."""
    return spark.createDataFrame(sorted(minor_units().items()), "currency string, minor_digits int")


def round_minor(amount: Column, digits: Column) -> Column:
    """Half up (Spark's `round`, away from zero for negatives) to `digits` fractional digits."""
    rounded = None
    for d in sorted(set(minor_units().values())):
        rounded = (F.when if rounded is None else rounded.when)(digits == d, F.round(amount, d))
    return rounded.cast(AMOUNT)


def money_text(amount: Column, digits: Column) -> Column:
    """An amount as text with exactly the currency's minor digits (for line descriptions)."""
    text = None
    for d in sorted(set(minor_units().values())):
        text = (F.when if text is None else text.when)(digits == d, F.format_number(amount, d))
    return text


@dataclass(frozen=True)
class BillingPeriod:
    """`[start, end)` in local calendar days of the operator's zone; `end` is the run date."""
    run_date: date
    start: date
    timezone: str

    @property
    def end(self) -> date:
        return self.run_date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def _utc(self, day: date) -> datetime:
        return local_midnight_utc(day, self.timezone)

    @property
    def start_at(self) -> datetime:
        return self._utc(self.start)

    @property
    def end_at(self) -> datetime:
        return self._utc(self.end)


def billing_period(run_date: date, timezone_name: str) -> BillingPeriod:
    """`[run_date − 1 month, run_date)`; bill-cycle days are 1–28, so the same day always exists."""
    year, month = (run_date.year - 1, 12) if run_date.month == 1 else (run_date.year, run_date.month - 1)
    start = date(year, month, min(run_date.day, monthrange(year, month)[1]))
    return BillingPeriod(run_date, start, timezone_name)


def invoice_id(run_date: date, account_id: Column) -> Column:
    """Deterministic and readable: one invoice per account and run date."""
    return F.concat(F.lit(f"INV-{run_date.isoformat()}-"), account_id)


def mask_number(number: Column, privacy: PrivacySettings) -> Column:
    if privacy.expose_numbers:
        return number
    hidden = F.least(F.lit(privacy.masked_digits), F.length(number))
    return F.concat(F.substring(number, F.lit(1), F.length(number) - hidden), F.repeat(F.lit("*"), hidden))


@dataclass(frozen=True)
class BillingRules:
    """Plans, Bundles and Taxes of one tariff version (jobs/tariff.py parses them)."""
    plans: list[dict]
    bundles: list[dict]
    taxes: list[dict]

    def frames(self, spark: SparkSession) -> tuple[DataFrame, DataFrame, DataFrame]:
        plans = spark.createDataFrame(
            [(p["plan_id"], p["description"], str(p["recurring_fee"]), p["currency"]) for p in self.plans],
            "plan_id string, plan_description string, recurring_fee string, plan_currency string",
        ).withColumn("recurring_fee", F.col("recurring_fee").cast(FEE))
        bundles = spark.createDataFrame(
            [(b["plan_id"], b["bundle_id"], b["category"], b["destination_id"], b["units"]) for b in self.bundles],
            "plan_id string, bundle_id string, bundle_category string, bundle_destination string, units long")
        taxes = spark.createDataFrame(
            [(t["tax_region"], t["category"], t["name"], str(t["rate"]), i) for i, t in enumerate(self.taxes)],
            "tax_region string, tax_category string, tax_name string, tax_rate string, tax_order int",
        ).withColumn("tax_rate", F.col("tax_rate").cast(TAX_RATE))
        return plans, bundles, taxes


def due_accounts(subscribers: DataFrame, period: BillingPeriod) -> DataFrame:
    """Accounts whose cycle closes on the run date, with currency and tax region.

    Taken from the account's row valid at the end of the period; for an account with no row
    left at that moment (closed during the period), its last row, so the final bill still goes out.
    """
    end_at = F.lit(period.end_at)
    valid_at_end = F.col("valid_to_at").isNull() | (F.col("valid_to_at") >= end_at)
    order = Window.partitionBy("account_id").orderBy(valid_at_end.desc(), F.col("valid_from_at").desc(), "msisdn")
    return (subscribers.where(F.col("valid_from_at") < end_at)
            .withColumn("_pick", F.row_number().over(order)).where(F.col("_pick") == 1)
            .where(F.col("bill_cycle_day") == period.run_date.day)
            .select("account_id", "currency", "tax_region"))


def subscription_days(spark: SparkSession, subscribers: DataFrame, period: BillingPeriod) -> DataFrame:
    """Days each (account, number, plan) is billed for: a local day counts for the row valid at its midnight."""
    days = spark.range(period.days).select(
        F.to_utc_timestamp(F.date_add(F.lit(period.start), F.col("id").cast("int")).cast("timestamp"),
                           period.timezone).alias("midnight_at"))
    valid = ((F.col("valid_from_at") <= F.col("midnight_at"))
             & (F.col("valid_to_at").isNull() | (F.col("midnight_at") < F.col("valid_to_at"))))
    return (subscribers.join(F.broadcast(days), valid)
            .groupBy("account_id", "msisdn", "plan_id").agg(F.count(F.lit(1)).alias("days_valid")))


def open_events(rated: DataFrame, invoiced_event_ids: DataFrame, due: DataFrame, period: BillingPeriod) -> DataFrame:
    """Chargeable events of due accounts started before the period's end and on no issued invoice."""
    return (rated.where(F.col("chargeable") & (F.col("event_start") < F.lit(period.end_at)))
            .join(due.select("account_id", F.col("currency").alias("account_currency")), "account_id")
            .join(invoiced_event_ids, "event_id", "left_anti")
            .withColumn("line_type", F.when(F.col("event_start") >= F.lit(period.start_at), F.lit("usage"))
                        .otherwise(F.lit("late_usage"))))


def account_exceptions(due: DataFrame, days: DataFrame, plans: DataFrame, events: DataFrame) -> DataFrame:
    """Invalid reference data: such an account is reported and not invoiced."""
    unknown_currency = due.where(F.col("minor_digits").isNull()).select(
        "account_id", F.lit(R.UNKNOWN_CURRENCY).alias("reason_code"),
        F.concat(F.lit("currency "), F.coalesce(F.col("currency"), F.lit("(empty)")), F.lit(" is not in ISO 4217")).alias("reason_detail"))
    with_plan = days.join(due, "account_id").join(F.broadcast(plans), "plan_id", "left")
    missing_plan = with_plan.where(F.col("plan_currency").isNull()).select(
        "account_id", F.lit(R.PLAN_NOT_IN_PLANS).alias("reason_code"),
        F.concat(F.lit("plan "), F.col("plan_id"), F.lit(" is missing from Plans.csv")).alias("reason_detail"))
    plan_currency = with_plan.where(F.col("plan_currency").isNotNull() & (F.col("plan_currency") != F.col("currency"))).select(
        "account_id", F.lit(R.PLAN_CURRENCY_MISMATCH).alias("reason_code"),
        F.concat(F.lit("plan "), F.col("plan_id"), F.lit(" is priced in "), F.col("plan_currency"),
                 F.lit(", the account bills in "), F.col("currency")).alias("reason_detail"))
    event_currency = (events.where(F.col("currency") != F.col("account_currency"))
                      .groupBy("account_id", "currency", "account_currency").count().select(
        "account_id", F.lit(R.EVENT_CURRENCY_MISMATCH).alias("reason_code"),
        F.concat(F.col("count").cast("string"), F.lit(" events rated in "), F.col("currency"),
                 F.lit(", the account bills in "), F.col("account_currency")).alias("reason_detail")))
    return unknown_currency.unionByName(missing_plan).unionByName(plan_currency).unionByName(event_currency).distinct()


def _line(line_type: str, sort_key, category, description, quantity, unit, exact_amount, *,
          destination_id=None, bundle_id=None, tax_name=None, tax_rate=None, event_count=None) -> list[Column]:
    """The common shape of every line before numbering (exact amount; rounded later in one place).

    Plain values are literals; pass Columns for per-row values. The frame must have `account_id`.
    """
    def col(value, dtype):
        return (value if isinstance(value, Column) else F.lit(value)).cast(dtype)

    return [F.col("account_id"), F.lit(line_type).alias("line_type"),
            F.lit(LINE_ORDER[line_type]).alias("line_rank"), col(sort_key, "string").alias("sort_key"),
            col(category, "string").alias("category"), col(description, "string").alias("description"),
            col(quantity, QUANTITY.simpleString()).alias("quantity"), col(unit, "string").alias("unit"),
            exact_amount.alias("exact_amount"), col(destination_id, "string").alias("destination_id"),
            col(bundle_id, "string").alias("bundle_id"), col(tax_name, "string").alias("tax_name"),
            col(tax_rate, "decimal(18,8)").alias("tax_rate"), col(event_count, "long").alias("event_count")]


def recurring_lines(days: DataFrame, plans: DataFrame, period: BillingPeriod, privacy: PrivacySettings) -> DataFrame:
    fee = F.col("recurring_fee") * F.col("days_valid").cast("decimal(10,0)") / F.lit(period.days).cast("decimal(10,0)")
    return days.join(F.broadcast(plans), "plan_id").select(*_line(
        "recurring", F.concat_ws("|", "plan_id", "msisdn"), "recurring",
        F.concat(F.col("plan_description"), F.lit(" · "), mask_number(F.col("msisdn"), privacy), F.lit(" · "),
                 F.col("days_valid").cast("string"), F.lit(f"/{period.days} days")),
        F.col("days_valid"), "day", fee))


def bundle_coverage(events: DataFrame, days: DataFrame, bundles: DataFrame) -> DataFrame:
    """Per in-period event that a bundle applies to: bundle_id, covered_units, covered_value."""
    pools = (days.select("account_id", "msisdn", "plan_id").distinct().join(F.broadcast(bundles), "plan_id")
             .groupBy("account_id", "bundle_id", "bundle_category", "bundle_destination")
             .agg(F.sum("units").alias("allowance")))
    matches = (events.where(F.col("line_type") == "usage")
               .select("event_id", "account_id", "category", "destination_id", "event_start", "usage", "cost")
               .join(pools, "account_id")
               .where((F.col("category") == F.col("bundle_category"))
                      & ((F.col("bundle_destination") == F.col("destination_id")) | (F.col("bundle_destination") == "*any"))))
    specific_first = Window.partitionBy("event_id").orderBy((F.col("bundle_destination") == "*any").asc(), "bundle_id")
    drawn = matches.withColumn("_pick", F.row_number().over(specific_first)).where(F.col("_pick") == 1)
    earlier = (Window.partitionBy("account_id", "bundle_id").orderBy("event_start", "event_id")
               .rowsBetween(Window.unboundedPreceding, -1))
    used_before = F.coalesce(F.sum("usage").over(earlier), F.lit(0))
    covered = F.greatest(F.lit(0), F.least(F.col("usage"), F.col("allowance") - used_before))
    share = (F.col("cost").cast("decimal(22,10)") * F.col("covered_units").cast("decimal(15,0)")
             / F.col("usage").cast("decimal(15,0)"))
    return (drawn.withColumn("covered_units", covered.cast("long"))
            .withColumn("covered_value", F.when(F.col("covered_units") == F.col("usage"), F.col("cost"))
                        .when(F.col("covered_units") == 0, F.lit(0)).otherwise(share).cast(COST))
            .select("event_id", "bundle_id", "bundle_category", "bundle_destination", "covered_units", "covered_value"))


def usage_lines(events: DataFrame, period: BillingPeriod) -> DataFrame:
    grouped = events.groupBy("account_id", "line_type", "category", "destination_id").agg(
        F.sum("usage").alias("quantity"), F.min("usage_unit").alias("unit"), F.sum("cost").alias("exact"),
        F.count(F.lit(1)).alias("events"))
    late = F.col("line_type") == "late_usage"
    description = F.concat(F.when(late, F.lit("late usage: ")).otherwise(F.lit("")), F.col("category"), F.lit(" to "),
                           F.col("destination_id"), F.lit(" · "), F.col("events").cast("string"), F.lit(" events"),
                           F.when(late, F.lit(f" before {period.start.isoformat()}")).otherwise(F.lit("")))
    usage = grouped.where(~late).select(*_line(
        "usage", F.concat_ws("|", "category", "destination_id"), F.col("category"), description,
        F.col("quantity"), F.col("unit"), F.col("exact"), destination_id=F.col("destination_id"), event_count=F.col("events")))
    late_usage = grouped.where(late).select(*_line(
        "late_usage", F.concat_ws("|", "category", "destination_id"), F.col("category"), description,
        F.col("quantity"), F.col("unit"), F.col("exact"), destination_id=F.col("destination_id"), event_count=F.col("events")))
    return usage.unionByName(late_usage)


def allowance_lines(events: DataFrame, coverage: DataFrame) -> DataFrame:
    used = (events.select("event_id", "account_id", "usage_unit").join(coverage, "event_id")
            .where(F.col("covered_units") > 0)
            .groupBy("account_id", "bundle_id", "bundle_category", "bundle_destination")
            .agg(F.sum("covered_units").alias("units"), F.sum("covered_value").alias("value"),
                 F.min("usage_unit").alias("unit"), F.count(F.lit(1)).alias("events")))
    return used.select(*_line(
        "allowance", F.col("bundle_id"), F.col("bundle_category"),
        F.concat(F.lit("bundle "), F.col("bundle_id"), F.lit(" ("), F.col("bundle_category"), F.lit(" to "),
                 F.col("bundle_destination"), F.lit("): "), F.col("units").cast("string"), F.lit(" "), F.col("unit"),
                 F.lit(" included")),
        F.col("units"), F.col("unit"), -F.col("value"), destination_id=F.col("bundle_destination"),
        bundle_id=F.col("bundle_id"), event_count=F.col("events")))


def open_adjustments(adjustments: DataFrame, invoiced_adjustment_ids: DataFrame, due: DataFrame) -> DataFrame:
    """Rerating differences of due accounts not yet on an issued invoice, whenever they were made."""
    return (adjustments.join(due.select("account_id"), "account_id")
            .join(invoiced_adjustment_ids, "adjustment_id", "left_anti"))


def adjustment_lines(adjustments: DataFrame) -> DataFrame:
    grouped = adjustments.groupBy("account_id", "category").agg(
        F.sum("amount").alias("exact"), F.count(F.lit(1)).alias("n"))
    return grouped.select(*_line(
        "adjustment", F.col("category"), F.col("category"),
        F.concat(F.lit("rerating adjustment: "), F.col("category"), F.lit(" · "), F.col("n").cast("string"),
                 F.lit(" events rated again after they were invoiced")),
        F.col("n"), "event", F.col("exact"), event_count=F.lit(0)))


def tax_lines(rounded_lines: DataFrame, due: DataFrame, taxes: DataFrame) -> DataFrame:
    """One line per matching Taxes.csv row: rate × the sum of the (rounded) non-tax lines of its category."""
    applies = (F.col("tax_category") == "*any") | (F.col("tax_category") == F.col("category"))
    bases = (rounded_lines.select("account_id", "category", "amount").join(due.select("account_id", "tax_region"), "account_id")
             .join(F.broadcast(taxes), ["tax_region"]).where(applies)
             .groupBy("account_id", "tax_category", "tax_name", "tax_rate", "tax_order")
             .agg(F.sum("amount").cast("decimal(22,4)").alias("base"))
             .where(F.col("base") != 0))
    percent = F.format_number(F.col("tax_rate") * 100, 2)
    return bases.join(due.select("account_id", "minor_digits"), "account_id").select(*_line(
        "tax", F.format_string("%04d", F.col("tax_order")), F.col("tax_category"),
        F.concat(F.col("tax_name"), F.lit(" "), F.regexp_replace(percent, r"\.?0+$", ""), F.lit("% of "),
                 money_text(F.col("base"), F.col("minor_digits")), F.lit(" ("), F.col("tax_category"), F.lit(")")),
        F.col("base"), F.lit("base"), F.col("base") * F.col("tax_rate"),
        tax_name=F.col("tax_name"), tax_rate=F.col("tax_rate")))


def _rounded(lines: DataFrame, due: DataFrame) -> DataFrame:
    return (lines.join(due.select("account_id", "currency", "minor_digits"), "account_id")
            .withColumn("amount", round_minor(F.col("exact_amount"), F.col("minor_digits")))
            .drop("exact_amount", "minor_digits"))


@dataclass
class Invoices:
    headers: DataFrame      # INVOICES without issued_at, bill_run_id, tariff_version, source_versions
    lines: DataFrame        # INVOICE_LINES
    links: DataFrame        # INVOICE_LINE_EVENTS
    exceptions: DataFrame   # account_id, reason_code, reason_detail
    held_events: DataFrame  # open events of accounts not invoiced because of invalid reference data
    adjustment_links: DataFrame  # INVOICE_LINE_ADJUSTMENTS


def build_invoices(spark: SparkSession, subscribers: DataFrame, rated: DataFrame, invoiced_event_ids: DataFrame,
                   rules: BillingRules, period: BillingPeriod, privacy: PrivacySettings,
                   adjustments: DataFrame | None = None, invoiced_adjustment_ids: DataFrame | None = None,
                   skip_accounts: DataFrame | None = None, only_account: str | None = None) -> Invoices:
    """All invoices of one bill run. `skip_accounts`: already issued for this run date.

    The few intermediate frames every line type reads (due accounts, subscription days, open
    events, lines) are computed once, as local checkpoints: every later plan starts from their
    rows. Persisted instead, each kept its whole lineage inside every plan built on it, and
    planning them took about 15 s of a 1M-event bill run; they also stay as they were when
    built, where Delta re-caches a persisted plan whose tables the run then writes.
    """
    def once(frame: DataFrame) -> DataFrame:
        return frame.localCheckpoint(eager=True)

    plans, bundles, taxes = rules.frames(spark)
    due = due_accounts(subscribers, period).join(F.broadcast(currency_digits(spark)), "currency", "left")
    if only_account is not None:
        due = due.where(F.col("account_id") == only_account)
    if skip_accounts is not None:
        due = due.join(skip_accounts, "account_id", "left_anti")
    due = once(due)
    days = subscription_days(spark, subscribers.join(due.select("account_id"), "account_id"), period)
    # the one read of every rated event and every invoiced id: what grows with the tables' history
    events = once(open_events(rated, invoiced_event_ids, due, period))
    exceptions = once(account_exceptions(due, days, plans, events))
    bad = exceptions.select("account_id").distinct()
    due = once(due.join(bad, "account_id", "left_anti"))
    days = once(days.join(bad, "account_id", "left_anti"))
    held = events.join(bad, "account_id", "left_semi")
    events = once(events.join(bad, "account_id", "left_anti"))

    coverage = once(bundle_coverage(events, days, bundles))
    adjusted = None
    if adjustments is not None:
        invoiced_adjustment_ids = (invoiced_adjustment_ids if invoiced_adjustment_ids is not None
                                   else adjustments.limit(0).select("adjustment_id"))
        adjusted = once(open_adjustments(adjustments, invoiced_adjustment_ids, due))
    lines_before_tax = (recurring_lines(days, plans, period, privacy)
                        .unionByName(usage_lines(events, period))
                        .unionByName(allowance_lines(events, coverage)))
    if adjusted is not None:
        lines_before_tax = lines_before_tax.unionByName(adjustment_lines(adjusted))
    non_tax = _rounded(lines_before_tax, due)
    taxes_rounded = _rounded(tax_lines(non_tax, due, taxes), due)
    numbered = non_tax.unionByName(taxes_rounded).withColumn(
        "line_no", F.row_number().over(Window.partitionBy("account_id").orderBy("line_rank", "sort_key")).cast("int"))
    lines = once(numbered.select(
        invoice_id(period.run_date, F.col("account_id")).alias("invoice_id"), "line_no", "line_type", "category",
        "description", "quantity", "unit", "amount", "currency", "destination_id", "bundle_id", "tax_name", "tax_rate",
        "event_count", "account_id", F.lit(period.run_date).alias("run_date")))

    usage_line_nos = lines.where(F.col("line_type").isin(*USAGE_LINE_TYPES)).select(
        "account_id", "line_type", "category", "destination_id", "invoice_id", "line_no")
    links = (events.join(usage_line_nos, ["account_id", "line_type", "category", "destination_id"])
             .join(coverage.select("event_id", "bundle_id", "covered_units", "covered_value"), "event_id", "left")
             .select("event_id", "invoice_id", "line_no", "account_id", "event_start", F.col("cost").cast(COST).alias("cost"),
                     "bundle_id", F.coalesce("covered_units", F.lit(0)).cast("long").alias("covered_units"),
                     F.coalesce("covered_value", F.lit(0)).cast(COST).alias("covered_value"),
                     F.lit(period.run_date).alias("run_date")))
    no_links = spark.createDataFrame([], "adjustment_id string, invoice_id string, line_no int, account_id string, run_date date")
    adjustment_links = no_links if adjusted is None else (
        adjusted.select("adjustment_id", "account_id", "category")
        .join(lines.where(F.col("line_type") == "adjustment").select("account_id", "category", "invoice_id", "line_no"),
              ["account_id", "category"])
        .select("adjustment_id", "invoice_id", "line_no", "account_id", F.lit(period.run_date).alias("run_date")))
    headers = invoice_headers(lines, due, period)
    return Invoices(headers, lines, links, exceptions, held, adjustment_links)


def invoice_headers(lines: DataFrame, due: DataFrame, period: BillingPeriod) -> DataFrame:
    is_tax = F.col("line_type") == "tax"
    zero = F.lit(0).cast(AMOUNT)
    totals = lines.groupBy("invoice_id", "account_id").agg(
        F.sum(F.when(~is_tax, F.col("amount")).otherwise(zero)).cast(AMOUNT).alias("subtotal"),
        F.sum(F.when(is_tax, F.col("amount")).otherwise(zero)).cast(AMOUNT).alias("tax_total"),
        F.count(F.lit(1)).cast("int").alias("line_count"),
        F.sum(F.when(F.col("line_type").isin(*USAGE_LINE_TYPES), F.col("event_count")).otherwise(0)).cast("long").alias("event_count"))
    return totals.join(due.drop("minor_digits"), "account_id").select(
        "invoice_id", "account_id", F.lit(period.run_date).alias("run_date"), F.lit(period.start).alias("period_start"),
        F.lit(period.end).alias("period_end"), "currency", "tax_region", "subtotal", "tax_total",
        (F.col("subtotal") + F.col("tax_total")).cast(AMOUNT).alias("total"), "line_count", "event_count")


def totals_problems(headers: DataFrame, lines: DataFrame) -> DataFrame:
    """Invoices whose totals do not follow from their lines, or with a line not in minor units."""
    is_tax = F.col("line_type") == "tax"
    digits = F.broadcast(currency_digits(lines.sparkSession))
    from_lines = lines.join(digits, "currency", "left").groupBy("invoice_id").agg(
        F.sum(F.when(~is_tax, F.col("amount")).otherwise(0)).alias("lines_subtotal"),
        F.sum(F.when(is_tax, F.col("amount")).otherwise(0)).alias("lines_tax_total"),
        F.sum((F.col("amount") != round_minor(F.col("amount"), F.col("minor_digits"))).cast("int")).alias("unrounded_lines"))
    checked = headers.join(from_lines, "invoice_id", "full")
    wrong = ((F.col("subtotal") != F.col("lines_subtotal")) | (F.col("tax_total") != F.col("lines_tax_total"))
             | (F.col("total") != F.col("subtotal") + F.col("tax_total")) | (F.col("unrounded_lines") > 0)
             | F.col("subtotal").isNull() | F.col("lines_subtotal").isNull())
    return checked.where(wrong).select(
        "invoice_id", "subtotal", "lines_subtotal", "tax_total", "lines_tax_total", "total", "unrounded_lines")
