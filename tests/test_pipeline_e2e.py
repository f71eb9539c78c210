"""Generated data through collect -> validate -> rate -> bill, reruns included, checked end to end."""
import csv
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs import assure, collect, rate, validate
from jobs.assure import AssuranceBreach
from jobs.common.delta_io import read_table
from jobs.generate.cdrs import GeneratorSettings, generate

START = date(2026, 11, 2)
DAYS = 2


def _snapshot(spark, conf, layer, table, drop=()):
    frame = read_table(spark, conf.table_path(layer, table)).drop(*drop)
    return sorted(tuple(r) for r in frame.collect())


@pytest.mark.slow
def test_generated_days_end_to_end(spark, conf, tmp_path):
    # tiny batches carry at least one of every fault kind, so allow more than 1 % bad rows
    # and so few calls that the planted leaks are most of a trunk's traffic: judge the budget separately
    strict_conf = conf.model_copy(update={"validation": conf.validation.model_copy(update={"mostly": 0.8})})
    conf = strict_conf.model_copy(update={"assurance": conf.assurance.model_copy(update={"leakage_budget_pct": 90.0})})
    generate(GeneratorSettings(out=tmp_path, seed=3, subscribers=40, start=START, days=DAYS, events_per_day=150))
    runs = []
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        runs += [collect.run(spark, conf, day), validate.run(spark, conf, day), rate.run(spark, conf, day),
                 assure.run(spark, conf, day)]

    # every deliberately bad record is quarantined with the reason the generator expects
    with (tmp_path / "expected" / "bad_records.csv").open() as handle:
        expected = {(r["source_file"], int(r["line_number"])): r["reason_code"] for r in csv.DictReader(handle)}
    quarantine = read_table(spark, conf.table_path("silver", "quarantine"))
    found = {(r.source_file, r.line_number): r.reason_code
             for r in quarantine.where("stage = 'validate' AND record_type != 'traffic'").collect()}
    assert expected and {k: found.get(k) for k in expected} == expected
    assert set(found) == set(expected), "a good record was quarantined"

    # conservation was checked by every run; the audit table has them all, succeeded
    audit = read_table(spark, conf.table_path("audit", "pipeline_runs")).collect()
    assert len(audit) == 4 * DAYS and all(r.status == "succeeded" for r in audit)
    collected = sum(r.records_in for r in runs if r.job == "collect")
    bronze_rows = sum(read_table(spark, conf.table_path("bronze", t)).count()
                      for t in ("cdr_voice", "cdr_sms", "cdr_data", "cdr_asterisk"))
    assert collected == bronze_rows > 0
    assert sum(r.duplicates for r in runs) > 0

    # every valid event is rated or quarantined by rating; costs are decimals
    events = read_table(spark, conf.table_path("silver", "events")).count()
    rated = read_table(spark, conf.table_path("gold", "rated_events"))
    rating_quarantine = quarantine.where("stage = 'rate'").count()
    assert rated.count() + rating_quarantine == events
    assert dict(rated.dtypes)["cost"].startswith("decimal")
    assert rated.where("NOT chargeable AND cost != 0").count() == 0

    # usage assurance finds every planted discrepancy on the settled day, and nothing else
    _assert_planted_discrepancies_found(spark, conf, tmp_path)

    # over the (default) leakage budget the assure task fails naming the worst objects, after writing
    with pytest.raises(AssuranceBreach, match=r"conversation_seconds leakage .* worst TG0102 \(3,360 s\), TG0199"):
        assure.run(spark, strict_conf, START + timedelta(days=1))

    # rerunning every day changes no table
    # (assurance rows carry the run that last judged them)
    tables = {("silver", "events"): (), ("silver", "quarantine"): (), ("silver", "duplicates"): (),
              ("gold", "rated_events"): (), ("silver", "traffic_measurements"): (),
              ("gold", "usage_assurance"): ("run_id",), ("gold", "usage_assurance_daily"): ("run_id",)}
    before = {t: _snapshot(spark, conf, *t, drop=drop) for t, drop in tables.items()}
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        assert collect.run(spark, conf, day).records_in == 0
        validate.run(spark, conf, day)
        rate.run(spark, conf, day)
        assure.run(spark, conf, day)
    for table, rows in before.items():
        assert _snapshot(spark, conf, *table, drop=tables[table]) == rows, table

    # the second day's bill run invoices its due accounts; every open chargeable event is on one line
    from jobs import bill
    from jobs.invoicing import billing_period

    run_date = START + timedelta(days=1)
    billed = bill.run(spark, conf, run_date)
    invoices = read_table(spark, conf.table_path("gold", "invoices"))
    links = read_table(spark, conf.table_path("gold", "invoice_line_events"))
    assert billed.details["invoices"] == invoices.count() > 0
    assert links.count() == links.select("event_id").distinct().count() == billed.rated
    period = billing_period(run_date, conf.operator.timezone)
    expected_events = (rated.where(F.col("chargeable") & (F.col("event_start") < F.lit(period.end_at)))
                       .join(invoices.select("account_id"), "account_id", "left_semi").select("event_id"))
    assert sorted(expected_events.collect()) == sorted(links.select("event_id").collect())
    assert bill.run(spark, conf, run_date).details["invoices"] == 0          # rerun: nothing new, nothing changed
    assert read_table(spark, conf.table_path("gold", "invoices")).count() == invoices.count()

    # publishing pins the day's table versions; a day that never ran cannot be published
    from jobs import publish

    publish.run(spark, conf, START + timedelta(days=1))
    published = read_table(spark, conf.table_path("audit", "published_days")).first()
    assert published.assured and runs[-2].run_id in published.run_ids
    pinned = json.loads(published.table_versions)["gold/rated_events"]
    assert read_table(spark, conf.table_path("gold", "rated_events"), version=pinned).count() == rated.count()
    with pytest.raises(publish.NotReadyToPublish, match="no successful collect, validate, rate run"):
        publish.run(spark, conf, START + timedelta(days=9))

    # finance reads gold without Spark
    from deltalake import DeltaTable

    frame = DeltaTable(conf.table_path("gold", "rated_events")).to_pandas()
    assert len(frame) == rated.count()
    sms_keys = frame.loc[frame["record_type"] == "sms", "source_keys"].map(lambda k: k[0])
    assert not any(k.split("|")[-1].startswith("4915") for k in sms_keys), "raw numbers leaked into gold"


def _assert_planted_discrepancies_found(spark, conf, out):
    with (out / "expected" / "traffic_discrepancies.csv").open() as handle:
        planted = {(r["object_id"], r["period_start"], r["metric"]): (r["status"], r["suspect"] == "True")
                   for r in csv.DictReader(handle)}
    settled = read_table(spark, conf.table_path("gold", "usage_assurance")).where(F.col("local_date") == F.lit(START))
    assert settled.where("NOT settled").count() == 0 and settled.count() > 0
    flagged = {(r.object_id, r.period_start.strftime("%Y-%m-%dT%H:%M:%SZ"), r.metric): (r.status, r.suspect)
               for r in settled.where("status != 'ok'").collect()}
    assert planted and flagged == planted
    with (out / "expected" / "traffic_bad_files.csv").open() as handle:
        bad_files = {r["source_file"]: r["reason_code"] for r in csv.DictReader(handle)}
    quarantined = {r.source_file: r.reason_code for r in read_table(spark, conf.table_path("silver", "quarantine"))
                   .where("record_type = 'traffic'").collect()}
    assert bad_files and quarantined == bad_files
    summary = read_table(spark, conf.table_path("gold", "usage_assurance_daily")).where(F.col("local_date") == F.lit(START))
    leaking = {r.object_id for r in summary.where("leakage > 0").collect()}
    assert leaking == {"TG0102", "TG0199", "ims"}
    report = Path(conf.paths.reports) / f"usage_assurance_{START.isoformat()}.txt"
    assert "TG0102" in report.read_text() and report.with_suffix(".png").stat().st_size > 1000


@pytest.mark.slow
def test_a_breached_expectation_fails_the_run_after_writing_what_it_found(spark, conf, tmp_path):
    from jobs.data_quality import DataQualityError

    strict = conf.model_copy(update={"validation": conf.validation.model_copy(update={"mostly": 0.999})})
    generate(GeneratorSettings(out=tmp_path, seed=5, subscribers=30, start=START, days=1, events_per_day=100))
    collect.run(spark, strict, START)
    with pytest.raises(DataQualityError, match=r"expect_column_values_to_be_null\(parse_error\).*data_docs/index.html"):
        validate.run(spark, strict, START)
    assert read_table(spark, strict.table_path("silver", "quarantine")).count() > 0
    results = read_table(spark, strict.table_path("audit", "validation_results"))
    assert results.where("NOT success").count() > 0
    audit = read_table(spark, strict.table_path("audit", "pipeline_runs")).where("job = 'validate'").first()
    assert audit.status == "failed"
    from jobs.data_quality import docs_dir

    assert (docs_dir(strict) / "index.html").is_file()
    # counts, never samples: a sample of unexpected values would put raw numbers into the HTML
    assert results.where("unexpected_count > 0 AND column_name IN ('served_msisdn', 'destination')").count() > 0
    pages = [page.read_text() for page in docs_dir(strict).rglob("*.html")]
    assert len(pages) > 1 and not [page for page in pages if "Unexpected Value" in page]
