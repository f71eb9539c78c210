import json
from datetime import date, datetime, timedelta
from pathlib import Path

from pyspark.sql import functions as F

from jobs import rate
from jobs.common.audit import new_run_id
from jobs.common.delta_io import merge, read_table
from schemas.tables import EVENTS
from tests.test_rating import write_plan

DAY = date(2026, 11, 5)


def _plan(folder, prefixes):
    return write_plan(folder, Destinations=[f"DST,{p}" for p in prefixes], Rates=["RT,0,1,60s,60s,0s"],
                      DestinationRates=["DR,DST,RT,*up,4,0,"], Timings=[], RatingPlans=["RP,DR,*any,10"],
                      RatingProfiles=["cgrates.org,call,*any,,RP,"])


def _event(event_id, destination, chargeable=True, event_date=DAY, validated_on=DAY):
    """An event as `validated_on`'s validate run wrote it."""
    return (event_id, "voice", [f"MSC01|{event_id}|1"], ["cdr/voice/f.csv"], "491511000001", destination,
            datetime.combine(event_date, datetime.min.time()).replace(hour=10), event_date, 60, "s", chargeable, "call",
            "ACC1", "P_BASIC", "EUR", "DE", "TG01", None, None, new_run_id("validate", validated_on))


def _write_events(spark, conf, *events) -> list[Path]:
    """MERGE the events into silver/events in one commit: the data files it added."""
    path = Path(conf.table_path("silver", "events"))
    merge(spark.createDataFrame(list(events), EVENTS), str(path), ["event_id"], partition_by=["event_date"])
    commit = sorted((path / "_delta_log").glob("*.json"))[-1]
    return [path / json.loads(line)["add"]["path"] for line in commit.read_text().splitlines() if "add" in json.loads(line)]


def test_a_day_s_rating_reads_the_files_of_its_day_s_validate_runs_and_rated_rows_of_their_dates(spark, conf, tmp_path):
    """Rating reads what its day added, not every partition of the lookback: yesterday's events
    (in yesterday's and an older partition) and the older partition's rated rows are deleted
    here, and reading them would fail. Today's late event shares yesterday's partition."""
    conf = conf.with_paths(rules=str(_plan(tmp_path / "rules", ["49"])))
    yesterday, older = DAY - timedelta(days=1), DAY - timedelta(days=5)
    yesterdays = _write_events(spark, conf, _event("y1", "4930", event_date=yesterday, validated_on=yesterday),
                               _event("y2", "4930", event_date=older, validated_on=yesterday))
    assert rate.run(spark, conf, yesterday).rated == 2
    _write_events(spark, conf, _event("t1", "4930"), _event("t2", "4931", event_date=yesterday),
                  _event("t3", "3312"))
    for data_file in yesterdays + list(Path(conf.table_path("gold", "rated_events"), f"event_date={older}").glob("*.parquet")):
        data_file.unlink()

    today = rate.run(spark, conf, DAY)
    assert (today.records_in, today.rated, today.quarantined) == (3, 2, 1)
    rated = read_table(spark, conf.table_path("gold", "rated_events")).where(F.col("event_date") >= yesterday)
    assert sorted(r.event_id for r in rated.collect()) == ["t1", "t2", "y1"]
    assert rate.run(spark, conf, DAY).records_in == 0                # the rerun: rated or waiting for recycle


def test_a_day_s_rating_skips_other_days_rated_rows_but_not_those_recycle_wrote(spark, conf, tmp_path):
    """Rated rows other days' rating runs wrote rated other days' events: a day's first attempt
    joins its events with no rated rows at all, and its later attempts and its MERGE skip those
    files (deleted here: reading one would fail). Rows `recycle` wrote may be this day's events,
    and are read."""
    conf = conf.with_paths(rules=str(_plan(tmp_path / "rules", ["49"])))
    yesterday = DAY - timedelta(days=1)
    _write_events(spark, conf, _event("y1", "4930", event_date=yesterday, validated_on=yesterday))
    assert rate.run(spark, conf, yesterday).rated == 1
    yesterdays_rated = list(Path(conf.table_path("gold", "rated_events"), f"event_date={yesterday}").glob("*.parquet"))
    _write_events(spark, conf, _event("t1", "4930"), _event("t2", "4931", event_date=yesterday))
    assert not [f for f in rate.days_events(spark, conf, DAY).inputFiles() if "rated_events" in f]

    assert rate.recycle(spark, conf, today=DAY).rated == 2           # today's events, before today's rating ran
    _write_events(spark, conf, _event("t3", "4932", event_date=yesterday))      # its MERGE matches in that partition
    for data_file in yesterdays_rated:
        data_file.unlink()
    today = rate.run(spark, conf, DAY)
    assert (today.records_in, today.rated) == (1, 1)
    assert rate.run(spark, conf, DAY).records_in == 0


def test_a_day_s_rating_reaches_back_as_far_as_validation_accepts(spark, conf, tmp_path):
    """Validation accepts events up to validation.max_event_age_days old (older: STALE_EVENT), and
    a day's rating looks for its events as far back: raised to 90 days, an 80-day-old event that
    today's validate accepted is rated today, not left in silver/events for no run to rate."""
    conf = conf.with_paths(rules=str(_plan(tmp_path / "rules", ["49"])))
    conf = conf.model_copy(update={"validation": conf.validation.model_copy(update={"max_event_age_days": 90})})
    _write_events(spark, conf, _event("late", "4930", event_date=DAY - timedelta(days=80)))
    assert rate.run(spark, conf, DAY).rated == 1


def test_an_event_no_day_s_rating_covers_is_left_to_recycle(spark, conf, tmp_path):
    """An event written by another day's validate run whose rating never ran is not today's to rate;
    `recycle` sweeps up every event left unrated in the lookback."""
    conf = conf.with_paths(rules=str(_plan(tmp_path / "rules", ["49"])))
    _write_events(spark, conf, _event("a", "4930"), _event("s", "4930", validated_on=DAY - timedelta(days=2)))
    assert rate.run(spark, conf, DAY).records_in == 1
    swept = rate.recycle(spark, conf, today=DAY)                    # its lookback counts back from DAY, not the clock
    assert (swept.details["newly_rated"], swept.rated) == (1, 1)
    assert sorted(r.event_id for r in read_table(spark, conf.table_path("gold", "rated_events")).collect()) == ["a", "s"]


def test_a_run_that_rates_every_event_does_not_read_the_quarantine(spark, conf, tmp_path):
    """Its quarantine MERGE would have no rows and still read every quarantine id ever kept: it is
    not run. The quarantine's data files are deleted here (validate's rows only, which the look for
    events waiting for recycle skips by their `stage` statistics); reading them would fail."""
    from jobs.validate import quarantine_rows

    conf = conf.with_paths(rules=str(_plan(tmp_path / "rules", ["49"])))
    bad_record = spark.createDataFrame([("voice", "cdr/voice/f.csv", 7, "MSC01|x|1", "MTC,,")],
                                       "record_type string, source_file string, line_number long, record_key string, raw_record string")
    path = Path(conf.table_path("silver", "quarantine"))
    merge(quarantine_rows(bad_record, F.lit("BAD_NUMBER"), F.lit("planted"), new_run_id("validate", DAY), DAY, datetime.now()),
          str(path), ["quarantine_id"], update=False)
    planted = list(path.rglob("*.parquet"))
    assert planted
    for data_file in planted:
        data_file.unlink()
    _write_events(spark, conf, _event("a", "4930"), _event("b", "4931"))

    assert (rate.run(spark, conf, DAY).rated, rate.run(spark, conf, DAY).records_in) == (2, 0)


def test_unratable_events_wait_in_quarantine_until_recycle_rates_them(spark, conf, tmp_path):
    conf = conf.with_paths(rules=str(_plan(tmp_path / "v1", ["49"])))
    merge(spark.createDataFrame([_event("a", "4930"), _event("b", "3312"), _event("c", "3312", chargeable=False)], EVENTS),
          conf.table_path("silver", "events"), ["event_id"])
    first = rate.run(spark, conf, DAY)
    assert (first.records_in, first.rated, first.quarantined) == (3, 2, 1)
    again = rate.run(spark, conf, DAY)                       # suspended events are left to recycle
    assert again.records_in == 0
    quarantine = read_table(spark, conf.table_path("silver", "quarantine"))
    assert [(r.record_key, r.reason_code, r.status) for r in quarantine.collect()] == [("b", "UNAUTHORIZED_DESTINATION", "suspended")]

    fixed = conf.with_paths(rules=str(_plan(tmp_path / "v2", ["49", "33"])))
    recycled = rate.recycle(spark, fixed)
    assert (recycled.records_in, recycled.rated, recycled.quarantined) == (1, 1, 0)
    row = read_table(spark, conf.table_path("silver", "quarantine")).first()
    assert (row.status, row.attempts, row.reason_code) == ("recycled", 2, "UNAUTHORIZED_DESTINATION")
    rated = {r.event_id: r for r in read_table(spark, conf.table_path("gold", "rated_events")).collect()}
    assert set(rated) == {"a", "b", "c"} and str(rated["b"].cost) == "1.0000000000" and rated["c"].cost == 0
    versions = read_table(spark, conf.table_path("gold", "tariff_versions")).select("tariff_version").collect()
    assert rated["b"].tariff_version != rated["a"].tariff_version and len(versions) == 2
    assert rate.recycle(spark, fixed).records_in == 0           # nothing left: idempotent


def test_the_priced_batch_keeps_what_only_a_quarantine_row_stores_only_where_rating_failed(spark, conf, tmp_path):
    """The checkpointed batch is what the MERGEs read: a rated row's numbers, network fields and
    source files are not written anywhere, an unratable event's all go into its quarantine row."""
    conf = conf.with_paths(rules=str(_plan(tmp_path / "rules", ["49"])))
    _, compiled = rate.load_rules(spark, conf)
    events = spark.createDataFrame([_event("a", "4930"), _event("b", "3312"), _event("c", "3312", chargeable=False)], EVENTS)
    source = {r.event_id: r for r in events.collect()}
    frame = rate.price_now(events, compiled, conf)
    priced = {r.event_id: r for r in frame.collect()}
    assert rate.UNRATED_ONLY == ["source_files", "served_msisdn", "destination", "plan_id", "tax_region",
                                 "msc_outgoing_tkgp", "apn", "serving_plmn", "run_id"]
    for event_id in "ac":
        assert priced[event_id].rating_reason is None
        assert all(priced[event_id][name] is None for name in rate.UNRATED_ONLY), priced[event_id]
        assert all(priced[event_id][name] == source[event_id][name] for name in EVENTS.fieldNames()
                   if name not in rate.UNRATED_ONLY)
    assert priced["b"].rating_reason == "UNAUTHORIZED_DESTINATION"
    assert all(priced["b"][name] == source["b"][name] for name in EVENTS.fieldNames())
    rated = {r.event_id: r.cost for r in rate.to_rated_rows(frame, conf, "v1", "run-1", datetime(2026, 11, 6)).collect()}
    assert set(rated) == {"a", "c"} and str(rated["a"]) == "1.0000000000" and rated["c"] == 0


def test_rerating_an_invoiced_event_adjusts_the_next_invoice(spark, conf, tmp_path):
    from jobs import bill
    from tests.test_bill_run import write_subscribers

    def plan(folder, rate_per_minute):
        return str(write_plan(folder, Destinations=["DST,49"], Rates=[f"RT,0,{rate_per_minute},60s,60s,0s"],
                              DestinationRates=["DR,DST,RT,*up,4,0,"], RatingPlans=["RP,DR,*any,10"],
                              RatingProfiles=["cgrates.org,call,*any,,RP,"], Plans=["P_BASIC,Basic,5.00,EUR", "P_PREMIUM,Premium,10.00,EUR", "P_BIZ_CHF,Biz,1.00,CHF"],
                              Taxes=["DE,*any,VAT,0.19"]))

    write_subscribers(tmp_path / "reference")
    v1 = conf.with_paths(rules=plan(tmp_path / "v1", "1"), reference=str(tmp_path / "reference"))
    events = [_event("a", "4930"), _event("b", "4940")]
    merge(spark.createDataFrame(events, EVENTS), conf.table_path("silver", "events"), ["event_id"])
    rate.run(spark, v1, DAY)
    bill.run(spark, v1, date(2026, 12, 1))

    v2 = v1.with_paths(rules=plan(tmp_path / "v2", "1.5"))
    preview = rate.rerate(spark, v2, date(2026, 11, 1), date(2026, 11, 30), dry_run=True)
    assert (preview.details["changed"], preview.details["adjustments"]) == (2, 2)
    costs = lambda: sorted(str(r.cost) for r in read_table(spark, conf.table_path("gold", "rated_events")).collect())
    assert costs() == ["1.0000000000", "1.0000000000"]                    # dry run wrote nothing
    done = rate.rerate(spark, v2, date(2026, 11, 1), date(2026, 11, 30))
    assert done.details["cost_delta_by_currency"] == {"EUR": "1.0000000000"} and costs() == ["1.5000000000"] * 2
    assert rate.rerate(spark, v2, date(2026, 11, 1), date(2026, 11, 30)).details["changed"] == 0   # idempotent

    bill.run(spark, v2, date(2027, 1, 1))
    january = read_table(spark, conf.table_path("gold", "invoice_lines")).where(
        F.col("invoice_id") == "INV-2027-01-01-ACC1").collect()
    adjustment = [r for r in january if r.line_type == "adjustment"]
    assert [(r.category, str(r.amount), str(r.quantity)) for r in adjustment] == [("call", "1.0000", "2.000000")]
    links = read_table(spark, conf.table_path("gold", "invoice_line_adjustments")).collect()
    assert {(r.invoice_id, r.line_no) for r in links} == {("INV-2027-01-01-ACC1", adjustment[0].line_no)} and len(links) == 2
    december = read_table(spark, conf.table_path("gold", "invoices")).where(F.col("invoice_id") == "INV-2026-12-01-ACC1").first()
    assert str(december.subtotal) == "12.0000"        # 5.00 + 10.00 × 15/30 days + 2 calls × 1.00, as issued
