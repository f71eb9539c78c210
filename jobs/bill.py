"""Bill run: rated events + subscribers + Plans/Bundles/Taxes -> invoice-ready gold tables.

`run(run_date)` closes the period `[run_date − 1 month, run_date)` of every account whose
bill-cycle day is the run date's day (arithmetic in jobs/invoicing.py) and writes
`gold/invoice_lines`, `gold/invoice_line_events` (lineage), then `gold/invoices` last: an invoice
exists, and its events count as invoiced, only once its header is committed, so a run killed
half-way leaves lines nobody reads, removed by the rerun. An issued invoice is never rewritten:
rerunning a run date skips the accounts it already invoiced, and usage arriving later goes on
the account's next invoice as late usage.

Each invoice records the Delta versions of every table the run read and its tariff version,
whose Plans/Bundles/Taxes are kept in `gold/billing_rules`; `reproduce(invoice_id)` recomputes
the invoice from exactly those versions (time travel) and reports any difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.common.audit import RunRecord, audited
from jobs.common.config import Config
from jobs.common.delta_io import (
    current_version, delete_matched, merge, read_table, read_version, replace_where, table_exists,
)
from jobs.common.reference import read_subscribers
from jobs.invoicing import BillingRules, Invoices, billing_period, build_invoices, totals_problems
from jobs.tariff import load_tariff
from schemas.tables import (
    ADJUSTMENTS, AMOUNT, INVOICE_LINE_ADJUSTMENTS, BILLING_EXCEPTIONS, BILLING_RULES, INVOICE_LINE_EVENTS, INVOICE_LINES, INVOICES, RATED_EVENTS,
    SUBSCRIBERS, TAX_SUMMARY,
)

STAGE = "bill"
# What a bill run reads; each invoice stores their versions under these names.
SOURCES = {
    "gold/rated_events": RATED_EVENTS,
    "silver/subscribers": SUBSCRIBERS,
    "gold/invoices": INVOICES,
    "gold/invoice_line_events": INVOICE_LINE_EVENTS,
    "gold/adjustments": ADJUSTMENTS,
    "gold/invoice_line_adjustments": INVOICE_LINE_ADJUSTMENTS,
}
COMPARED_LINE_COLUMNS = ("line_no", "line_type", "category", "description", "quantity", "unit", "amount", "currency")


class InvoiceTotalsError(RuntimeError):
    """An invoice whose totals do not follow from its lines: nothing is written."""


def _path(conf: Config, name: str) -> str:
    layer, table = name.split("/")
    return conf.table_path(layer, table)


def snapshot_subscribers(spark: SparkSession, conf: Config) -> None:
    """Keep the CRM export as Delta (a new version only when it changed) so bills can be reproduced."""
    path = _path(conf, "silver/subscribers")
    fresh = read_subscribers(spark, conf.paths.reference, conf.operator.timezone).select(*SUBSCRIBERS.fieldNames())
    if table_exists(spark, path):
        stored = read_table(spark, path)
        if fresh.exceptAll(stored).isEmpty() and stored.exceptAll(fresh).isEmpty():
            return
    fresh.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)


def record_billing_rules(spark: SparkSession, conf: Config, tariff_version: str, rules: BillingRules) -> None:
    rules_json = json.dumps({"plans": rules.plans, "bundles": rules.bundles, "taxes": rules.taxes}, default=str, sort_keys=True)
    row = spark.createDataFrame([(tariff_version, rules_json, datetime.now(timezone.utc).replace(tzinfo=None))], BILLING_RULES)
    merge(row, conf.table_path("gold", "billing_rules"), ["tariff_version"], update=False)


def billing_rules_of(spark: SparkSession, conf: Config, tariff_version: str) -> BillingRules:
    row = (read_table(spark, conf.table_path("gold", "billing_rules"), BILLING_RULES)
           .where(F.col("tariff_version") == tariff_version).first())
    if row is None:
        raise LookupError(f"tariff version {tariff_version} has no billing rules in gold/billing_rules")
    data = json.loads(row.rules_json)
    plans = [{**p, "recurring_fee": Decimal(p["recurring_fee"])} for p in data["plans"]]
    taxes = [{**t, "rate": Decimal(t["rate"])} for t in data["taxes"]]
    return BillingRules(plans, data["bundles"], taxes)


@dataclass
class Sources:
    versions: dict[str, int | None]
    subscribers: DataFrame
    rated: DataFrame
    invoices: DataFrame
    invoiced_event_ids: DataFrame
    adjustments: DataFrame
    invoiced_adjustment_ids: DataFrame

    @classmethod
    def at(cls, spark: SparkSession, conf: Config, versions: dict[str, int | None]) -> "Sources":
        frames = {name: read_version(spark, _path(conf, name), schema, versions.get(name))
                  for name, schema in SOURCES.items()}
        invoices = frames["gold/invoices"]
        # events count as invoiced only through an issued (committed) invoice header
        def issued(links: DataFrame, key: str) -> DataFrame:
            return links.join(invoices.select("invoice_id"), "invoice_id", "left_semi").select(key)

        return cls(versions, frames["silver/subscribers"], frames["gold/rated_events"], invoices,
                   issued(frames["gold/invoice_line_events"], "event_id"), frames["gold/adjustments"],
                   issued(frames["gold/invoice_line_adjustments"], "adjustment_id"))

    def build(self, spark: SparkSession, rules: BillingRules, period, privacy, **selection) -> Invoices:
        return build_invoices(spark, self.subscribers, self.rated, self.invoiced_event_ids, rules, period, privacy,
                              adjustments=self.adjustments, invoiced_adjustment_ids=self.invoiced_adjustment_ids,
                              **selection)

    @classmethod
    def latest(cls, spark: SparkSession, conf: Config) -> "Sources":
        return cls.at(spark, conf, {name: current_version(spark, _path(conf, name)) for name in SOURCES})


def write_invoices(conf: Config, run_date: date, headers: DataFrame, result: Invoices) -> None:
    spark = headers.sparkSession
    headers_path = conf.table_path("gold", "invoices")
    issued = read_table(spark, headers_path, INVOICES).where(F.col("run_date") == F.lit(run_date)).select("invoice_id")
    for table in ("invoice_lines", "invoice_line_events", "invoice_line_adjustments"):
        path = conf.table_path("gold", table)
        if table_exists(spark, path):
            leftovers = (read_table(spark, path).where(F.col("run_date") == F.lit(run_date))
                         .join(issued, "invoice_id", "left_anti").select("invoice_id").distinct())
            if not leftovers.isEmpty():
                delete_matched(leftovers, path, ["invoice_id"])
    # A row can match only one of this run date's (a rerun's): the links of every other date are of
    # issued invoices, whose events are not open, or left by an unissued run of that date, which
    # must not keep an event off this invoice. Only this date's partition is read, not the history.
    this_run = F.col("t.run_date") == F.lit(run_date)
    merge(result.lines, conf.table_path("gold", "invoice_lines"), ["invoice_id", "line_no"], update=False,
          partition_by=["run_date"], target_filter=this_run)
    merge(result.links, conf.table_path("gold", "invoice_line_events"), ["event_id"], update=False, partition_by=["run_date"],
          target_filter=this_run)
    if not result.adjustment_links.isEmpty():
        merge(result.adjustment_links, conf.table_path("gold", "invoice_line_adjustments"), ["adjustment_id"], update=False)
    merge(headers, headers_path, ["invoice_id"], update=False)


def refresh_tax_summary(spark: SparkSession, conf: Config, month: str) -> None:
    """Tax liability per region, tax and month of issue, recomputed from the month's invoices' tax lines."""
    invoices = read_table(spark, conf.table_path("gold", "invoices"), INVOICES).where(
        F.date_format("run_date", "yyyy-MM") == month)
    lines = read_table(spark, conf.table_path("gold", "invoice_lines"), INVOICE_LINES).where(F.col("line_type") == "tax")
    summary = (lines.join(invoices.select("invoice_id", "tax_region"), "invoice_id")
               .groupBy("tax_region", "tax_name", "currency")
               .agg(F.sum("quantity").cast(AMOUNT).alias("taxable_base"), F.sum("amount").cast(AMOUNT).alias("tax_amount"),
                    F.countDistinct("invoice_id").alias("invoice_count"))
               .select("tax_region", "tax_name", F.lit(month).alias("month"), "currency", "taxable_base", "tax_amount",
                       "invoice_count"))
    replace_where(spark.createDataFrame(summary.collect(), TAX_SUMMARY), conf.table_path("gold", "tax_summary"),
                  f"month = '{month}'")


def run(spark: SparkSession, conf: Config, run_date: date, record: RunRecord | None = None) -> RunRecord:
    record = record or RunRecord(STAGE, run_date)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with audited(spark, conf, record):
        tariff = load_tariff(conf.paths.rules, conf.operator.timezone)
        rules = BillingRules(tariff.plans, tariff.bundles, tariff.taxes)
        record_billing_rules(spark, conf, tariff.version, rules)
        snapshot_subscribers(spark, conf)
        sources = Sources.latest(spark, conf)
        period = billing_period(run_date, conf.operator.timezone)
        already = sources.invoices.where(F.col("run_date") == F.lit(run_date)).select("account_id")
        result = sources.build(spark, rules, period, conf.privacy, skip_accounts=already)
        problems = totals_problems(result.headers, result.lines).limit(5).collect()
        if problems:
            raise InvoiceTotalsError(f"{len(problems)}+ invoices fail the totals check, e.g. {problems[0].asDict()}")
        headers = result.headers.select(
            "*", F.lit(now).alias("issued_at"), F.lit(record.run_id).alias("bill_run_id"),
            F.lit(tariff.version).alias("tariff_version"),
            F.lit(json.dumps(sources.versions, sort_keys=True)).alias("source_versions")).select(*INVOICES.fieldNames())
        write_invoices(conf, run_date, headers, result)
        exceptions = result.exceptions.select(F.lit(run_date).alias("run_date"), "account_id", "reason_code",
                                              "reason_detail", F.lit(record.run_id).alias("bill_run_id"))
        merge(spark.createDataFrame(exceptions.collect(), BILLING_EXCEPTIONS), conf.table_path("audit", "billing_exceptions"),
              ["run_date", "account_id", "reason_code"])
        refresh_tax_summary(spark, conf, run_date.strftime("%Y-%m"))
        written = read_table(spark, conf.table_path("gold", "invoices")).where(F.col("bill_run_id") == record.run_id)
        totals = {r.currency: str(r.total) for r in written.groupBy("currency").agg(F.sum("total").alias("total")).collect()}
        # the run's invoices carry its run date: read only that partition of the links, not their history
        record.rated = (read_table(spark, conf.table_path("gold", "invoice_line_events"))
                        .where(F.col("run_date") == F.lit(run_date))
                        .join(written.select("invoice_id"), "invoice_id", "left_semi").count())
        record.pending = result.held_events.count()
        record.records_in = record.rated + record.pending
        record.details.update({
            "period": [period.start.isoformat(), period.end.isoformat()], "invoices": written.count(),
            "totals_by_currency": totals, "already_issued": already.count(), "tariff_version": tariff.version,
            "accounts_not_invoiced": {r.reason_code: r["count"] for r in result.exceptions.groupBy("reason_code").count().collect()},
        })
        record.check_conservation(record.rated)
    return record


@dataclass
class Reproduction:
    invoice_id: str
    versions: dict
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def reproduce(spark: SparkSession, conf: Config, invoice_id: str) -> Reproduction:
    """Recompute an issued invoice from the table versions it recorded and compare it line by line."""
    header = read_table(spark, conf.table_path("gold", "invoices"), INVOICES).where(F.col("invoice_id") == invoice_id).first()
    if header is None:
        raise LookupError(f"no invoice {invoice_id} in gold/invoices")
    versions = json.loads(header.source_versions)
    sources = Sources.at(spark, conf, versions)
    result = sources.build(spark, billing_rules_of(spark, conf, header.tariff_version),
                           billing_period(header.run_date, conf.operator.timezone), conf.privacy,
                           only_account=header.account_id)
    report = Reproduction(invoice_id, versions)
    stored = {r.line_no: r for r in read_table(spark, conf.table_path("gold", "invoice_lines"))
              .where(F.col("invoice_id") == invoice_id).select(*COMPARED_LINE_COLUMNS).collect()}
    again = {r.line_no: r for r in result.lines.select(*COMPARED_LINE_COLUMNS).collect()}
    for line_no in sorted(set(stored) | set(again)):
        before, after = stored.get(line_no), again.get(line_no)
        if before is None or after is None:
            report.differences.append(f"line {line_no}: {'only recomputed' if before is None else 'only stored'}")
            continue
        for column in COMPARED_LINE_COLUMNS[1:]:
            if before[column] != after[column]:
                report.differences.append(f"line {line_no} {column}: stored {before[column]!r}, recomputed {after[column]!r}")
    recomputed = result.headers.first()
    for column in ("subtotal", "tax_total", "total"):
        if recomputed is None or header[column] != recomputed[column]:
            report.differences.append(f"{column}: stored {header[column]}, recomputed "
                                      f"{None if recomputed is None else recomputed[column]}")
    stored_links = read_table(spark, conf.table_path("gold", "invoice_line_events")).where(
        F.col("invoice_id") == invoice_id).select("event_id", "line_no", "covered_units", "covered_value")
    again_links = result.links.select("event_id", "line_no", "covered_units", "covered_value")
    only_stored, only_again = stored_links.exceptAll(again_links).count(), again_links.exceptAll(stored_links).count()
    if only_stored or only_again:
        report.differences.append(f"events: {only_stored} linked only in the stored invoice, {only_again} only when recomputed")
    return report
