"""`cdr-billing`: maps subcommands to stage run() calls. No logic of its own."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

from jobs.common.config import ConfigError, load_config


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdr-billing", description="Telecom CDR billing pipeline on Spark and Delta Lake.")
    parser.add_argument("--conf", help="YAML config file (default conf/local.yaml, or $CDR_BILLING_CONF)")
    parser.add_argument("--landing", help="landing folder (overrides paths.landing)")
    parser.add_argument("--reference", help="reference folder with subscribers.csv (overrides paths.reference)")
    parser.add_argument("--rules", help="tariff plan folder (overrides paths.rules)")
    parser.add_argument("--warehouse", help="Delta warehouse root (overrides paths.warehouse)")
    parser.add_argument("--master", help="Spark master (overrides spark.master)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="write sample landing data and subscribers")
    gen.add_argument("--out", required=True, type=Path, help="output folder (landing/, reference/, expected/)")
    gen.add_argument("--seed", type=int, default=42, help="random seed: same seed, byte-identical files")
    gen.add_argument("--subscribers", type=int, default=200, help="number of subscriber numbers")
    gen.add_argument("--start", type=_date, default=date(2026, 11, 2), help="first day (YYYY-MM-DD)")
    gen.add_argument("--days", type=int, default=3, help="number of days of traffic")
    gen.add_argument("--events-per-day", type=int, default=2000, help="events per weekday (weekends fewer)")

    day = sub.add_parser("run-day", help="collect new landing files, validate, rate, assure for one day")
    day.add_argument("--date", required=True, type=_date, help="logical date (YYYY-MM-DD)")
    day.add_argument("--stages", default="collect,validate,rate,assure,publish",
                     help="comma-separated stages to run, in order (default: all daily stages)")

    bill = sub.add_parser("bill", help="bill run: accounts whose cycle closes on the run date")
    what = bill.add_mutually_exclusive_group(required=True)
    what.add_argument("--run-date", type=_date, help="run date (YYYY-MM-DD): closes [run date − 1 month, run date)")
    what.add_argument("--reproduce", metavar="INVOICE_ID", help="recompute an issued invoice from Delta history")

    invoice = sub.add_parser("invoice", help="look at one invoice (reads the gold tables without Spark)")
    invoice_sub = invoice.add_subparsers(dest="invoice_command", required=True, metavar="ACTION")
    show = invoice_sub.add_parser("show", help="print the invoice; --html FILE also renders it as HTML")
    show.add_argument("invoice_id", metavar="INVOICE_ID")
    show.add_argument("--html", type=Path, metavar="FILE", help="write a clean HTML invoice to FILE")

    rerate = sub.add_parser("rerate", help="rate the events of a date range again with the current rules")
    rerate.add_argument("--from", dest="date_from", required=True, type=_date, help="first event date")
    rerate.add_argument("--to", dest="date_to", required=True, type=_date, help="last event date (inclusive)")
    rerate.add_argument("--dry-run", action="store_true", help="write nothing to rated_events; report the diff")

    sub.add_parser("recycle", help="retry suspended quarantine records after reference or tariff fixes")
    sub.add_parser("rebuild-key-index", help="rebuild the duplicate key index (silver/record_keys) from bronze and "
                                             "silver/duplicates, e.g. one of the layout before event dates")
    demo = sub.add_parser("demo", help="generate sample data and run the pipeline through the Airflow DAGs")
    demo.add_argument("--days", type=int, default=3, help="days of traffic to run")
    demo.add_argument("--events-per-day", type=int, default=2000, help="events per weekday")
    demo.add_argument("--out", type=Path, default=Path("demo-data"), help="where the demo's data and warehouse go")
    sql = sub.add_parser("sql", help="run SQL over the tables, registered as billing.<table>")
    sql.add_argument("query", help='e.g. "SELECT * FROM billing.invoices LIMIT 5"')
    return parser


def _config(args):
    overrides = {"paths.landing": args.landing, "paths.reference": args.reference, "paths.rules": args.rules,
                 "paths.warehouse": args.warehouse, "spark.master": args.master}
    return load_config(args.conf, overrides)


def _stage(name: str):
    from jobs import assure, collect, publish, rate, validate

    stages = {"collect": collect.run, "validate": validate.run, "rate": rate.run, "assure": assure.run,
              "publish": publish.run}
    if name not in stages:
        raise ValueError(f"unknown stage {name!r} (one of {', '.join(stages)})")
    return stages[name]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        conf = _config(args)
        if args.command == "generate":
            from jobs.generate.cdrs import GeneratorSettings, generate

            started = time.monotonic()
            summary = generate(GeneratorSettings(out=args.out, seed=args.seed, subscribers=args.subscribers,
                                                 start=args.start, days=args.days, events_per_day=args.events_per_day,
                                                 timezone=conf.operator.timezone,
                                                 home_country_code=conf.operator.home_country_code))
            print(f"generated {sum(summary['records'].values())} records {summary['records']} "
                  f"for {summary['subscribers']} subscriber rows in {time.monotonic() - started:.1f}s -> {args.out}")
            return 0
        if args.command == "demo":
            from jobs.demo import run_demo

            return run_demo(conf, args.out, days=args.days, events_per_day=args.events_per_day)
        if args.command == "invoice":
            from jobs.invoice_view import load_invoice, render_html, render_text

            doc = load_invoice(conf, args.invoice_id)
            print(render_text(doc))
            if args.html:
                args.html.write_text(render_html(doc), encoding="utf-8")
                print(f"HTML invoice written to {args.html}")
            return 0
        from jobs.common.preflight import check_rules, check_warehouse
        from jobs.common.run_lock import run_lock
        from jobs.common.spark import build_spark

        stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.command == "run-day" else []
        for name in stages:
            _stage(name)
        if args.command in ("rerate", "recycle", "bill") or "rate" in stages:
            check_rules(conf)                      # an invalid plan stops the run before anything is written
        spark = build_spark(conf)
        if args.command in ("run-day", "bill", "rerate", "recycle", "rebuild-key-index"):
            check_warehouse(spark, conf)
        lock_key = _lock_key(args)
        if lock_key is None:
            return _run(args, spark, conf, stages)
        with run_lock(spark, conf, lock_key):
            return _run(args, spark, conf, stages)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one-line reason for people; the stack trace is in the Spark log
        from jobs.common.jars import MissingJarsError
        from jobs.common.preflight import PreflightError
        from jobs.common.run_lock import RunLocked
        from jobs.tariff import TariffError

        if isinstance(exc, RunLocked):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        if isinstance(exc, (MissingJarsError, NotImplementedError, PreflightError, TariffError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
              file=sys.stderr)
        return 1


def _lock_key(args) -> str | None:
    """Commands that write hold a lock per job and date; reading ones (sql, reproduce) none."""
    if args.command == "run-day":
        return f"run-day {args.date}"
    if args.command == "bill":
        return f"bill {args.run_date}" if args.run_date else None
    return args.command if args.command in ("rerate", "recycle", "rebuild-key-index") else None


def _run(args, spark, conf, stages: list[str]) -> int:
    if args.command == "run-day":
        for name in stages:
            started = time.monotonic()
            record = _stage(name)(spark, conf, args.date)
            print(f"{name:<9} {args.date}  in={record.records_in:>9,}  rated={record.rated:>9,}  "
                  f"quarantined={record.quarantined:>7,}  duplicates={record.duplicates:>6,}  "
                  f"pending={record.pending:>6,}  {time.monotonic() - started:6.1f}s", flush=True)
        return 0
    if args.command == "rebuild-key-index":
        from jobs.validate import rebuild_key_index

        started = time.monotonic()
        record = rebuild_key_index(spark, conf)
        print(f"rebuild-key-index  keys indexed={record.records_in:,}  {time.monotonic() - started:6.1f}s")
        return 0
    if args.command == "sql":
        from jobs.common.catalog import register_tables

        register_tables(spark, conf)
        frame = spark.sql(args.query).limit(1000).toPandas()
        from tabulate import tabulate

        print(tabulate(frame, headers="keys", tablefmt="simple", showindex=False))
        return 0
    if args.command == "bill" and args.reproduce:
        from jobs.bill import reproduce

        report = reproduce(spark, conf, args.reproduce)
        versions = ", ".join(f"{name}@{version}" for name, version in sorted(report.versions.items()))
        if report.identical:
            print(f"{report.invoice_id}: reproduced exactly from {versions}")
            return 0
        print(f"{report.invoice_id}: DIFFERS from its recomputation at {versions}:")
        for difference in report.differences:
            print(f"  {difference}")
        return 1
    if args.command == "bill":
        from jobs.bill import run as bill_run

        started = time.monotonic()
        record = bill_run(spark, conf, args.run_date)
        d = record.details
        print(f"bill      {args.run_date}  period {d['period'][0]}..{d['period'][1]}  invoices={d['invoices']:,}  "
              f"events={record.rated:,}  held={record.pending:,}  already issued={d['already_issued']:,}  "
              f"{time.monotonic() - started:6.1f}s")
        from decimal import Decimal

        from jobs.invoicing import round_minor_value

        for currency, total in sorted(d["totals_by_currency"].items()):
            print(f"  total billed {currency} {round_minor_value(Decimal(total), currency):,}")
        for reason, count in sorted(d["accounts_not_invoiced"].items()):
            print(f"  not invoiced: {count} accounts {reason} (see billing.billing_exceptions)")
        return 0
    if args.command == "rerate":
        from jobs.rate import rerate

        record = rerate(spark, conf, args.date_from, args.date_to, dry_run=args.dry_run)
        d = record.details
        print(f"rerate {args.date_from}..{args.date_to}{' (dry run: nothing written)' if args.dry_run else ''}: "
              f"rated again={record.rated:,} changed={d['changed']:,} adjustments for issued invoices="
              f"{d['adjustments']:,} not ratable with the current rules (kept as rated)={d['not_ratable_now']:,}")
        for currency, delta in sorted(d["cost_delta_by_currency"].items()):
            print(f"  cost change {currency} {delta}")
        return 0
    if args.command == "recycle":
        from jobs import rate, validate

        checked = validate.recycle(spark, conf)
        print(f"recycle validate: retried={checked.records_in:,} now valid={checked.rated:,} "
              f"parts waiting for their call/session={checked.pending:,} still suspended={checked.quarantined:,}")
        record = rate.recycle(spark, conf)
        d = record.details
        print(f"recycle rate:     retried={d['retried']:,} newly valid events={d['newly_rated']:,} "
              f"rated={record.rated:,} suspended={record.quarantined:,}")
        return 0
    raise NotImplementedError(f"`{args.command}` is not built yet")


if __name__ == "__main__":
    sys.exit(main())
