"""Invoice arithmetic on tiny frames: proration, cycles, currencies, taxes, bundles, late usage, checks."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from jobs.common.config import PrivacySettings
from jobs.common.reference import subscriber_periods
from jobs.invoicing import BillingRules, billing_period, build_invoices, round_minor_value, totals_problems
from schemas import reason_codes as R
from schemas.landing import SUBSCRIBER_COLUMNS
from schemas.tables import RATED_EVENTS

pytestmark = pytest.mark.generated_code
TZ = "Europe/Berlin"
PLANS = [
    {"plan_id": "P_EUR", "description": "Mobile", "recurring_fee": Decimal("9.99"), "currency": "EUR"},
    {"plan_id": "P_FLAT", "description": "Flat", "recurring_fee": Decimal("31.00"), "currency": "EUR"},
    {"plan_id": "P_JPY", "description": "Tokyo", "recurring_fee": Decimal("1000"), "currency": "JPY"},
    {"plan_id": "P_BHD", "description": "Manama", "recurring_fee": Decimal("2.5"), "currency": "BHD"},
    {"plan_id": "P_BUNDLE", "description": "With minutes", "recurring_fee": Decimal("0"), "currency": "EUR"},
]
BUNDLES = [{"plan_id": "P_BUNDLE", "bundle_id": "B_MIN", "category": "call", "destination_id": "*any", "units": 100}]
TAXES = [
    {"tax_region": "DE", "category": "*any", "name": "VAT", "rate": Decimal("0.19")},
    {"tax_region": "DE", "category": "call", "name": "Levy", "rate": Decimal("0.005")},
    {"tax_region": "BH", "category": "*any", "name": "VAT", "rate": Decimal("0.10")},
]
RULES = BillingRules(PLANS, BUNDLES, TAXES)


def subscribers(spark, *rows):
    """rows: (account, msisdn, plan, cycle_day, currency, region, valid_from, valid_to)."""
    raw = [dict(zip(("account_id", "msisdn", "plan_id", "bill_cycle_day", "currency", "tax_region", "valid_from",
                     "valid_to"), map(str, row)), imsi="") for row in rows]
    frame = spark.createDataFrame([[r[c] for c in SUBSCRIBER_COLUMNS] for r in raw],
                                  ",".join(f"{c} string" for c in SUBSCRIBER_COLUMNS))
    return subscriber_periods(frame, TZ)


def rated(spark, *rows):
    """rows: (event_id, account, event_start UTC, usage, category, destination, cost, currency)."""
    full = [(eid, "voice", [eid], acc, start, start.date(), usage, "s" if cat == "call" else "msg", True, cat, dest,
             "RP", Decimal(cost), Decimal(cost), cur, "v1", datetime(2026, 12, 1), "r") for
            eid, acc, start, usage, cat, dest, cost, cur in rows]
    return spark.createDataFrame(full, RATED_EVENTS)


def bill(spark, subs, events, run_date, invoiced=(), privacy=None):
    invoiced_ids = spark.createDataFrame([(e,) for e in invoiced], "event_id string")
    return build_invoices(spark, subs, events, invoiced_ids, RULES, billing_period(run_date, TZ),
                          privacy or PrivacySettings())


def lines_of(result, account=None):
    frame = result.lines if account is None else result.lines.where(F.col("account_id") == account)
    return [r.asDict() for r in frame.orderBy("invoice_id", "line_no").collect()]


def header_of(result, account):
    return result.headers.where(F.col("account_id") == account).first()


# One December bill run over many small accounts, each exercising one rule (a bill run costs
# seconds of Spark planning, so the cases share it).
DECEMBER_SUBSCRIBERS = [
    ("PRO", "4915100000001", "P_EUR", 1, "EUR", "DE", "2026-11-11", ""),
    ("PRO", "4915100000002", "P_EUR", 1, "EUR", "DE", "2026-10-01", "2026-11-06"),
    ("J1", "81900", "P_JPY", 1, "JPY", "JP", "2026-01-01", ""),
    ("B1", "97300", "P_BHD", 1, "BHD", "BH", "2026-01-01", ""),
    ("TAX", "491520", "P_EUR", 1, "EUR", "DE", "2026-01-01", ""),
    ("LATE", "491530", "P_EUR", 1, "EUR", "DE", "2026-01-01", ""),
    ("BADCUR", "491540", "P_JPY", 1, "EUR", "DE", "2026-01-01", ""),
    ("NOPLAN", "491541", "P_GONE", 1, "EUR", "DE", "2026-01-01", ""),
    ("OTHER", "491550", "P_EUR", 15, "EUR", "DE", "2026-01-01", ""),
]
DECEMBER_EVENTS = [
    ("j1", "J1", datetime(2026, 11, 5, 10), 60, "call", "D_JP", "12.5", "JPY"),
    ("b1", "B1", datetime(2026, 11, 5, 10), 60, "call", "D_BH", "1.2345", "BHD"),
    ("t1", "TAX", datetime(2026, 11, 5, 10), 600, "call", "DST_DE", "10.00", "EUR"),
    ("old", "LATE", datetime(2026, 10, 20, 10), 60, "call", "DST_DE", "1.00", "EUR"),
    ("billed", "LATE", datetime(2026, 10, 21, 10), 60, "call", "DST_DE", "5.00", "EUR"),
    ("now", "LATE", datetime(2026, 11, 20, 10), 60, "call", "DST_DE", "2.00", "EUR"),
    ("next", "LATE", datetime(2026, 12, 2, 10), 60, "call", "DST_DE", "7.00", "EUR"),
    ("x1", "BADCUR", datetime(2026, 11, 5, 10), 60, "call", "DST_DE", "1.00", "EUR"),
    ("o1", "OTHER", datetime(2026, 11, 5, 10), 60, "call", "DST_DE", "1.00", "EUR"),
]


@pytest.fixture(scope="module")
def december(spark):
    return bill(spark, subscribers(spark, *DECEMBER_SUBSCRIBERS), rated(spark, *DECEMBER_EVENTS),
                date(2026, 12, 1), invoiced=["billed"])


def test_billing_period_across_february():
    feb = billing_period(date(2027, 3, 1), TZ)
    assert (feb.start, feb.end, feb.days) == (date(2027, 2, 1), date(2027, 3, 1), 28)
    jan = billing_period(date(2027, 2, 28), TZ)
    assert (jan.start, jan.days) == (date(2027, 1, 28), 31)
    assert billing_period(date(2027, 1, 15), TZ).start == date(2026, 12, 15)
    # the period is in local days: midnight in Berlin is 23:00 UTC the day before in winter
    assert feb.start_at == datetime(2027, 1, 31, 23, 0)


def test_proration_for_numbers_starting_and_ending_mid_period(december):
    lines = lines_of(december, "PRO")
    recurring = {r["quantity"]: r["amount"] for r in lines if r["line_type"] == "recurring"}
    assert recurring == {Decimal("20"): Decimal("6.66"), Decimal("5"): Decimal("1.67")}   # 9.99×5/30 = 1.665 → half up
    descriptions = [r["description"] for r in lines if r["line_type"] == "recurring"]
    assert all("***" in d and "4915100000" in d and "0000001" not in d for d in descriptions)
    header = header_of(december, "PRO")
    assert (header.invoice_id, header.subtotal) == ("INV-2026-12-01-PRO", Decimal("8.33"))
    assert header.tax_total == Decimal("1.58")     # VAT 0.19 × 8.33 = 1.5827
    assert header.total == Decimal("9.91")
    assert (header.period_start, header.period_end) == (date(2026, 11, 1), date(2026, 12, 1))


@pytest.mark.parametrize("run_date, days, start, expected", [
    (date(2027, 3, 1), 28, "2027-02-15", Decimal("15.50")),   # 14 of 28 days × 31.00
    (date(2027, 2, 28), 31, "2027-02-14", Decimal("14.00")),  # 14 of 31 days × 31.00
])
def test_bill_cycle_days_1_and_28_across_february(spark, run_date, days, start, expected):
    subs = subscribers(spark, ("A1", "491510", "P_FLAT", run_date.day, "EUR", "DE", start, ""),
                       ("A2", "491511", "P_FLAT", 15, "EUR", "DE", "2026-01-01", ""))   # other cycle: not due
    result = bill(spark, subs, rated(spark), run_date)
    lines = lines_of(result)
    assert [(r["invoice_id"], r["line_type"], r["amount"]) for r in lines if r["line_type"] == "recurring"] == \
           [(f"INV-{run_date}-A1", "recurring", expected)]
    assert f"14/{days} days" in lines[0]["description"]


def test_zero_and_three_decimal_currencies(december):
    amounts = {(r["account_id"], r["line_type"]): r["amount"] for r in lines_of(december)}
    assert amounts[("J1", "recurring")] == Decimal("1000")
    assert amounts[("J1", "usage")] == Decimal("13")         # 12.5 half up to 0 digits
    assert amounts[("B1", "usage")] == Decimal("1.235")      # 1.2345 half up to 3 digits
    assert amounts[("B1", "tax")] == Decimal("0.374")        # 0.10 × (2.500 + 1.235) = 0.3735
    assert ("J1", "tax") not in amounts                      # no JP rows in Taxes.csv
    assert round_minor_value(Decimal("-0.125"), "EUR") == Decimal("-0.13")   # away from zero


def test_two_taxes_on_one_line(december):
    taxes = [(r["tax_name"], r["quantity"], r["amount"]) for r in lines_of(december, "TAX") if r["line_type"] == "tax"]
    assert taxes == [("VAT", Decimal("19.99"), Decimal("3.80")), ("Levy", Decimal("10.00"), Decimal("0.05"))]
    assert [r["description"] for r in lines_of(december, "TAX") if r["line_type"] == "tax"] == [
        "VAT 19% of 19.99 (*any)", "Levy 0.5% of 10.00 (call)"]
    header = header_of(december, "TAX")
    assert (header.subtotal, header.tax_total, header.total) == (Decimal("19.99"), Decimal("3.85"), Decimal("23.84"))


def test_invoice_frames_start_from_rows_computed_once_not_from_their_lineage(december):
    """Every line type reads the same few intermediate frames. Their rows are computed once and the
    plans of lines, links and headers start from those rows: kept as lineage (persisted), planning
    them took about 15 s of a 1M-event bill run."""
    for frame, computed_frames in ((december.lines, 1), (december.links, 3), (december.headers, 2)):
        plan = frame._jdf.queryExecution().analyzed()
        leaves = plan.collectLeaves()
        assert leaves.size() == computed_frames, plan.toString()[:3000]
        assert "Window" not in plan.toString()


def test_a_bill_run_reads_the_rated_events_once(spark):
    """The open events are found by reading every rated event and every invoiced id, which grow by
    a day's events every day (1M a day with 30 earlier days: 42 s -> 170 s a bill run). They are
    read once; the exceptions, the held events and the lines all start from that."""
    reads = spark.sparkContext.accumulator(0)

    def counted(_):
        reads.add(1)
        return True

    read_once = F.udf(counted, "boolean").asNondeterministic()
    events = rated(spark, *DECEMBER_EVENTS).where(read_once(F.col("event_id")))
    result = bill(spark, subscribers(spark, *DECEMBER_SUBSCRIBERS), events, date(2026, 12, 1), invoiced=["billed"])
    assert [r.event_id for r in result.held_events.collect()] == ["x1"]
    assert len(result.links.collect()) == 5
    assert reads.value == len(DECEMBER_EVENTS)


def test_every_open_chargeable_event_is_on_exactly_one_line(december):
    links = december.links.collect()
    assert sorted(r.event_id for r in links) == ["b1", "j1", "now", "old", "t1"]   # x1 held, o1 not due, next later
    assert totals_problems(december.headers, december.lines).count() == 0


def _bundle_case(spark, order):
    subs = subscribers(spark, ("A1", "491510", "P_BUNDLE", 1, "EUR", "DE", "2026-01-01", ""))
    rows = [("e1", "A1", datetime(2026, 11, 5, 10), 60, "call", "DST_DE", "0.60", "EUR"),
            ("e2", "A1", datetime(2026, 11, 6, 10), 90, "call", "DST_DE", "0.90", "EUR"),
            ("e3", "A1", datetime(2026, 11, 7, 10), 30, "call", "DST_FR", "0.75", "EUR"),
            ("e0", "A1", datetime(2026, 11, 6, 10), 10, "call", "DST_DE", "0.10", "EUR")]  # same start as e2: id decides
    events = rated(spark, *[rows[i] for i in order]).repartition(3)
    return bill(spark, subs, events, date(2026, 12, 1))


def test_bundle_partly_consumed_by_a_call(spark):
    result = _bundle_case(spark, [0, 1, 2, 3])
    links = {r.event_id: (r.covered_units, r.covered_value) for r in result.links.collect()}
    # 100 s pool: e1 60 s, then e0 10 s (same start as e2, lower id), then e2 30 of its 90 s, e3 nothing
    assert links["e1"] == (60, Decimal("0.60"))
    assert links["e0"] == (10, Decimal("0.10"))
    assert links["e2"] == (30, Decimal("0.3000000000"))          # 0.90 × 30 / 90
    assert links["e3"] == (0, Decimal("0"))
    allowance = [r for r in lines_of(result) if r["line_type"] == "allowance"]
    assert [(r["bundle_id"], r["quantity"], r["amount"]) for r in allowance] == [("B_MIN", Decimal("100"), Decimal("-1.00"))]
    assert result.headers.first().subtotal == Decimal("1.35")    # 2.35 usage − 1.00 covered


def test_bundle_result_does_not_depend_on_arrival_order(spark):
    in_order, reversed_order = _bundle_case(spark, [0, 1, 2, 3]), _bundle_case(spark, [3, 1, 2, 0])
    assert lines_of(reversed_order) == lines_of(in_order)
    assert sorted(reversed_order.links.collect()) == sorted(in_order.links.collect())


def test_late_usage_goes_on_the_next_invoice_only_once(december):
    by_type = {r["line_type"]: r for r in lines_of(december, "LATE")}
    assert by_type["late_usage"]["amount"] == Decimal("1.00") and "before 2026-11-01" in by_type["late_usage"]["description"]
    assert by_type["usage"]["amount"] == Decimal("2.00")
    links = {r.event_id: r.line_no for r in december.links.where(F.col("account_id") == "LATE").collect()}
    assert links == {"old": by_type["late_usage"]["line_no"], "now": by_type["usage"]["line_no"]}


def test_invalid_reference_data_is_reported_and_not_invoiced(december):
    assert {(r.account_id, r.reason_code) for r in december.exceptions.collect()} == {
        ("BADCUR", R.PLAN_CURRENCY_MISMATCH), ("NOPLAN", R.PLAN_NOT_IN_PLANS)}
    assert {r.account_id for r in december.headers.collect()} == {"PRO", "J1", "B1", "TAX", "LATE"}
    assert [r.event_id for r in december.held_events.collect()] == ["x1"]


def test_totals_check_fires_on_a_broken_line(december):
    broken = december.lines.withColumn(
        "amount", F.when((F.col("account_id") == "TAX") & (F.col("line_type") == "usage"), F.col("amount") + F.lit(0.01))
        .otherwise(F.col("amount")).cast("decimal(20,4)"))
    assert [r.invoice_id for r in totals_problems(december.headers, broken).collect()] == ["INV-2026-12-01-TAX"]
    unrounded = december.lines.withColumn(
        "amount", F.when((F.col("account_id") == "TAX") & (F.col("line_type") == "usage"), F.lit(Decimal("10.005")))
        .otherwise(F.col("amount")).cast("decimal(20,4)"))
    assert totals_problems(december.headers, unrounded).first().unrounded_lines == 1
