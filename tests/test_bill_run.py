"""Bill runs against Delta: idempotent reruns, late usage, lineage, reproduce, deltalake reads, views."""
from __future__ import annotations

import csv
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs import bill
from jobs.cli import main as cli
from jobs.common.delta_io import merge, read_table
from schemas.landing import SUBSCRIBER_COLUMNS
from schemas.tables import INVOICE_LINE_EVENTS, RATED_EVENTS

SUBSCRIBERS = [
    # account, msisdn, plan, cycle day, currency, region, valid_from, valid_to
    ("ACC1", "4915100000001", "P_BASIC", 1, "EUR", "DE", "2026-01-01", ""),
    ("ACC1", "4915100000002", "P_PREMIUM", 1, "EUR", "DE", "2026-11-16", ""),
    ("ACC2", "41790000001", "P_BIZ_CHF", 1, "CHF", "CH", "2026-01-01", ""),
    ("ACC3", "4915100000003", "P_BASIC", 15, "EUR", "DE", "2026-01-01", ""),
]


def event(event_id, account, start, usage, category, destination, cost, currency="EUR"):
    unit = {"call": "s", "sms": "msg", "data": "bytes"}[category]
    return (event_id, "voice" if category == "call" else category, [f"{event_id}|1"], account, start, start.date(), usage,
            unit, True, category, destination, "RP_TEST", Decimal(cost), Decimal(cost), currency, "test", datetime(2026, 12, 1),
            "test-run")


NOVEMBER = [
    event("e1", "ACC1", datetime(2026, 11, 3, 9), 1200, "call", "DST_DE_MOBILE", "2.40"),
    event("e2", "ACC1", datetime(2026, 11, 4, 9), 2400, "call", "DST_DE_MOBILE", "4.80"),   # bundle covers 1800 of 2400 s
    event("e3", "ACC1", datetime(2026, 11, 5, 9), 300, "call", "DST_FR", "1.25"),
    event("e4", "ACC2", datetime(2026, 11, 6, 9), 600, "call", "DST_CH", "3.3333", "CHF"),
    event("e5", "ACC3", datetime(2026, 11, 7, 9), 60, "call", "DST_DE_MOBILE", "0.20"),    # cycle 15: not due
]
LATE = [event("late1", "ACC1", datetime(2026, 11, 20, 9), 60, "call", "DST_FR", "0.50"),
        event("dec1", "ACC1", datetime(2026, 12, 3, 9), 60, "call", "DST_FR", "0.75")]


def write_subscribers(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "subscribers.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUBSCRIBER_COLUMNS)
        for account, msisdn, plan, cycle, currency, region, valid_from, valid_to in SUBSCRIBERS:
            writer.writerow([account, msisdn, "", plan, cycle, currency, region, valid_from, valid_to])


def add_rated(spark, conf, rows) -> None:
    merge(spark.createDataFrame(rows, RATED_EVENTS), conf.table_path("gold", "rated_events"), ["event_id"],
          partition_by=["event_date"])


def snapshot(spark, conf, table, order):
    return [r.asDict() for r in read_table(spark, conf.table_path("gold", table)).orderBy(*order).collect()]


@pytest.fixture(scope="module")
def billed(spark, base_conf, tmp_path_factory):
    """Two bill runs with a rerun and late usage in between; returns what each step saw."""
    root = tmp_path_factory.mktemp("bill")
    conf = base_conf.with_paths(warehouse=str(root / "warehouse"), reference=str(root / "reference"))
    write_subscribers(root / "reference")
    add_rated(spark, conf, NOVEMBER)
    steps = {"conf": conf, "first": bill.run(spark, conf, date(2026, 12, 1))}
    tables = {"invoices": ["invoice_id"], "invoice_lines": ["invoice_id", "line_no"],
              "invoice_line_events": ["event_id"], "tax_summary": ["tax_region", "tax_name", "month"]}
    steps["after_first"] = {t: snapshot(spark, conf, t, o) for t, o in tables.items()}
    steps["rerun"] = bill.run(spark, conf, date(2026, 12, 1))
    steps["after_rerun"] = {t: snapshot(spark, conf, t, o) for t, o in tables.items()}
    add_rated(spark, conf, LATE)
    steps["january"] = bill.run(spark, conf, date(2027, 1, 1))
    steps["after_january"] = {t: snapshot(spark, conf, t, o) for t, o in tables.items()}
    return steps


def lines(steps, key, invoice_id):
    return [r for r in steps[key]["invoice_lines"] if r["invoice_id"] == invoice_id]


def test_december_invoices(billed):
    invoices = {r["invoice_id"]: r for r in billed["after_first"]["invoices"]}
    assert set(invoices) == {"INV-2026-12-01-ACC1", "INV-2026-12-01-ACC2"}
    acc1 = {(r["line_type"], r["category"], r["destination_id"]): r["amount"]
            for r in lines(billed, "after_first", "INV-2026-12-01-ACC1")}
    # 9.99 full month; premium 29.99 for 15 of 30 days; bundle: 3000 s of DST_DE_MOBILE, e2 covered 1800/2400
    assert acc1[("recurring", "recurring", None)] in (Decimal("9.99"), Decimal("15.00"))
    assert acc1[("usage", "call", "DST_DE_MOBILE")] == Decimal("7.20")
    assert acc1[("allowance", "call", "DST_DE_MOBILE")] == Decimal("-6.00")     # 2.40 + 4.80 × 1800/2400
    assert acc1[("usage", "call", "DST_FR")] == Decimal("1.25")
    header = invoices["INV-2026-12-01-ACC1"]
    assert header["subtotal"] == Decimal("9.99") + Decimal("15.00") + Decimal("7.20") - Decimal("6.00") + Decimal("1.25")
    # VAT 19% of everything + levy 0.5% of call lines (7.20 − 6.00 + 1.25 = 2.45)
    assert header["tax_total"] == Decimal("5.21") + Decimal("0.01")     # 0.19 × 27.44 = 5.2136; 0.005 × 2.45
    assert header["total"] == header["subtotal"] + header["tax_total"]
    chf = invoices["INV-2026-12-01-ACC2"]
    assert (chf["currency"], chf["subtotal"], chf["tax_total"]) == ("CHF", Decimal("43.23"), Decimal("3.50"))
    assert billed["first"].details["totals_by_currency"] == {"EUR": str(header["total"]), "CHF": str(chf["total"])}


def test_every_chargeable_event_on_exactly_one_line(billed):
    links = billed["after_first"]["invoice_line_events"]
    assert sorted(r["event_id"] for r in links) == ["e1", "e2", "e3", "e4"]     # e5's account closes on the 15th
    lines_by_key = {(r["invoice_id"], r["line_no"]): r for r in billed["after_first"]["invoice_lines"]}
    assert all(lines_by_key[(r["invoice_id"], r["line_no"])]["line_type"] == "usage" for r in links)
    first = billed["first"]
    assert (first.records_in, first.rated, first.pending) == (4, 4, 0)


def test_a_link_left_by_an_unissued_run_of_another_date_does_not_keep_an_event_off_its_invoice(spark, base_conf, tmp_path):
    """A bill run that died after writing its links but before their invoice headers leaves links
    that invoice nothing, so their events stay open. The next run, of another run date, links them
    on its own invoice: its MERGE matches only its own date's links (and reads only that partition
    of a table that grows by every invoiced event)."""
    conf = base_conf.with_paths(warehouse=str(tmp_path / "warehouse"), reference=str(tmp_path / "reference"))
    write_subscribers(tmp_path / "reference")
    add_rated(spark, conf, NOVEMBER)
    links_path = conf.table_path("gold", "invoice_line_events")
    orphan = spark.createDataFrame([("e1", "INV-2026-11-30-ACC1", 2, "ACC1", datetime(2026, 11, 3, 9), Decimal("2.40"), None, 0,
                                     Decimal("0"), date(2026, 11, 30))], INVOICE_LINE_EVENTS)
    merge(orphan, links_path, ["event_id"], update=False, partition_by=["run_date"])

    bill.run(spark, conf, date(2026, 12, 1))
    links = read_table(spark, links_path).where(F.col("event_id") == "e1").collect()
    assert sorted((r.run_date, r.invoice_id) for r in links) == [(date(2026, 11, 30), "INV-2026-11-30-ACC1"),
                                                                 (date(2026, 12, 1), "INV-2026-12-01-ACC1")]
    usage = read_table(spark, conf.table_path("gold", "invoice_lines")).where(
        (F.col("invoice_id") == "INV-2026-12-01-ACC1") & (F.col("line_type") == "usage")).collect()
    assert sum(r.event_count for r in usage) == 3                              # e1, e2, e3


def test_rerun_is_idempotent(billed):
    assert billed["after_rerun"] == billed["after_first"]
    assert billed["rerun"].details["already_issued"] == 2 and billed["rerun"].details["invoices"] == 0


def test_late_usage_goes_on_the_next_invoice_and_the_issued_one_is_unchanged(billed):
    december = [r for r in billed["after_january"]["invoice_lines"] if r["invoice_id"].startswith("INV-2026-12-01")]
    assert december == billed["after_first"]["invoice_lines"]
    january = lines(billed, "after_january", "INV-2027-01-01-ACC1")
    late = [r for r in january if r["line_type"] == "late_usage"]
    assert [(r["category"], r["destination_id"], r["amount"]) for r in late] == [("call", "DST_FR", Decimal("0.50"))]
    usage = [r for r in january if r["line_type"] == "usage"]
    assert [(r["destination_id"], r["amount"]) for r in usage] == [("DST_FR", Decimal("0.75"))]
    link = {r["event_id"]: r["invoice_id"] for r in billed["after_january"]["invoice_line_events"]}
    assert link["late1"] == link["dec1"] == "INV-2027-01-01-ACC1" and link["e1"] == "INV-2026-12-01-ACC1"


def test_tax_summary_matches_the_tax_lines(billed):
    summary = {(r["tax_region"], r["tax_name"], r["month"]): r for r in billed["after_january"]["tax_summary"]}
    tax_lines = [r for r in billed["after_january"]["invoice_lines"] if r["line_type"] == "tax"]
    for (region, name, month), row in summary.items():
        matching = [r for r in tax_lines if r["tax_name"] == name and r["run_date"].strftime("%Y-%m") == month
                    and r["currency"] == row["currency"]]
        assert row["tax_amount"] == sum(r["amount"] for r in matching)
        assert row["taxable_base"] == sum(r["quantity"] for r in matching)
        assert row["invoice_count"] == len({r["invoice_id"] for r in matching})
    assert ("DE", "VAT", "2026-12") in summary and ("CH", "MWST", "2026-12") in summary


def test_reproduce_from_history_and_detect_tampering(spark, billed):
    conf = billed["conf"]
    report = bill.reproduce(spark, conf, "INV-2026-12-01-ACC1")   # rated_events and links have moved on since
    assert report.identical, report.differences
    from delta.tables import DeltaTable

    lines_table = DeltaTable.forPath(spark, conf.table_path("gold", "invoice_lines"))
    lines_table.update("invoice_id = 'INV-2026-12-01-ACC1' AND line_no = 1", {"amount": "amount + 1"})
    try:
        tampered = bill.reproduce(spark, conf, "INV-2026-12-01-ACC1")
        assert any(d.startswith("line 1 amount") for d in tampered.differences)
    finally:
        lines_table.update("invoice_id = 'INV-2026-12-01-ACC1' AND line_no = 1", {"amount": "amount - 1"})


def test_finance_reads_gold_without_spark_and_sees_consistent_totals(billed):
    from deltalake import DeltaTable

    conf = billed["conf"]
    invoices = DeltaTable(conf.table_path("gold", "invoices")).to_pandas()
    invoice_lines = DeltaTable(conf.table_path("gold", "invoice_lines")).to_pandas()
    assert len(invoices) == 4
    for row in invoices.itertuples():
        mine = invoice_lines[invoice_lines.invoice_id == row.invoice_id]
        assert isinstance(row.total, Decimal)
        assert row.subtotal == sum(mine[mine.line_type != "tax"].amount)
        assert row.tax_total == sum(mine[mine.line_type == "tax"].amount)


def test_invoice_show_and_html(billed, tmp_path, capsys):
    conf = billed["conf"]
    html = tmp_path / "invoice.html"
    assert cli(["--warehouse", conf.paths.warehouse, "invoice", "show", "INV-2026-12-01-ACC1", "--html", str(html)]) == 0
    text = capsys.readouterr().out
    header = next(r for r in billed["after_first"]["invoices"] if r["invoice_id"] == "INV-2026-12-01-ACC1")
    total = f"{header['total'].quantize(Decimal('0.01')):,}"
    assert "Invoice INV-2026-12-01-ACC1" in text and total in text and "4915100000***" in text
    assert " 7.20\n" in text and " -6.00\n" in text          # amounts keep the currency's two digits
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<td>late usage</td>" not in page and f"{total} EUR" in page
    assert "4915100000001" not in page
    assert cli(["--warehouse", conf.paths.warehouse, "invoice", "show", "INV-NOPE"]) == 2


def test_finance_queries_the_tables_by_name(spark, billed, capsys, session_settings_for_the_cli):
    conf = billed["conf"]
    query = "SELECT currency, count(*) AS invoices, sum(total) AS total FROM billing.invoices GROUP BY 1 ORDER BY 1"
    assert cli(["--warehouse", conf.paths.warehouse, "sql", query]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["currency", "invoices", "total"]
    assert [line.split()[:2] for line in out[2:]] == [["CHF", "2"], ["EUR", "2"]]
    assert spark.conf.get("spark.sql.shuffle.partitions") == str(conf.spark.shuffle_partitions)
