"""Usage assurance on tiny frames: CDR metrics, statuses, suspect counters, bad files, leakage verdicts."""
from datetime import date, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from jobs import assure, measurements
from jobs.common.config import AssuranceSettings
from jobs.generate.traffic import measurement_file, spread_seconds
from schemas import reason_codes as R
from schemas.landing import TRUNK_LDN
from schemas.tables import EVENTS
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")


def _event(record_type, start, usage, tkgp=None, apn=None, chargeable=True):
    row = dict.fromkeys(EVENTS.fieldNames())
    row.update(event_id=f"{record_type}{start}{tkgp}{apn}", record_type=record_type, event_start=start, usage=usage,
               chargeable=chargeable, msc_outgoing_tkgp=tkgp, apn=apn)
    return row


def _metrics(spark, events):
    frame = spark.createDataFrame(events, EVENTS)
    return {(r.object_id, r.metric, r.period_start.strftime("%H:%M")): r.value for r in assure.cdr_metrics(frame).collect()}


def test_a_call_spanning_two_periods_counts_once_and_splits_its_seconds(spark):
    got = _metrics(spark, [
        _event("voice", datetime(2026, 11, 2, 9, 14, 0), 300, tkgp="TG0101"),          # 60 s + 240 s
        _event("voice", datetime(2026, 11, 2, 9, 20, 0), 0, tkgp="TG0101"),            # answered, no seconds
        _event("voice", datetime(2026, 11, 2, 9, 5, 0), 100, tkgp=None),               # incoming: no trunk
        _event("voice", datetime(2026, 11, 2, 9, 5, 0), 100, tkgp="TG0101", chargeable=False),
        _event("data", datetime(2026, 11, 2, 9, 29, 59), 5_000, apn="ims"),
    ])
    assert got == {("TG0101", "answered_calls", "09:00"): 1, ("TG0101", "answered_calls", "09:15"): 1,
                   ("TG0101", "conversation_seconds", "09:00"): 60, ("TG0101", "conversation_seconds", "09:15"): 240,
                   ("ims", "data_octets", "09:15"): 5_000}


def test_the_generator_spreads_seconds_as_the_pipeline_does():
    import numpy as np

    idx, period, seconds = spread_seconds(np.array([9 * 3600 + 14 * 60]), np.array([300]))
    assert list(seconds) == [60, 240] and list(period - period[0]) == [0, 900] and list(idx) == [0, 0]


def _compare(spark, network, cdr, **settings):
    keys = "object_type string, object_id string, metric string, period_start timestamp, value long"
    net = spark.createDataFrame(network, keys + ", suspect boolean")
    got = assure.compare(net, spark.createDataFrame(cdr, keys), AssuranceSettings(**settings))
    return {(r.object_id, r.metric): (r.status, r.difference, r.suspect) for r in got.collect()}


def test_statuses_follow_the_tolerances(spark):
    t = datetime(2026, 11, 2, 9, 0)
    network = [("trunk_group", "A", "conversation_seconds", t, 1000, False),    # within 2 %
               ("trunk_group", "B", "conversation_seconds", t, 1000, False),    # 100 s unbilled
               ("trunk_group", "C", "answered_calls", t, 4, False),             # no CDR at all
               ("trunk_group", "E", "answered_calls", t, 0, False),             # quiet on both sides
               ("trunk_group", "S", "answered_calls", t, 9, True)]              # suspect counter
    cdr = [("trunk_group", "A", "conversation_seconds", t, 985), ("trunk_group", "B", "conversation_seconds", t, 900),
           ("trunk_group", "D", "answered_calls", t, 2), ("trunk_group", "S", "answered_calls", t, 2)]
    got = _compare(spark, network, cdr)
    assert got == {("A", "conversation_seconds"): ("ok", 15, False), ("B", "conversation_seconds"): ("mismatch", 100, False),
                   ("C", "answered_calls"): ("missing_cdrs", 4, False), ("D", "answered_calls"): ("missing_counters", None, False),
                   ("E", "answered_calls"): ("ok", 0, False), ("S", "answered_calls"): ("mismatch", 7, True)}
    loose = _compare(spark, network, cdr, tolerance_pct=20.0)
    assert loose[("B", "conversation_seconds")][0] == "ok"


def test_suspect_counters_are_reported_but_not_counted_as_leakage(spark):
    t = datetime(2026, 11, 2, 9, 0)
    rows = [("S", "trunk_group", t, "conversation_seconds", 900, 100, 800, Decimal("88.89"), "mismatch", True, True,
             date(2026, 11, 2), "r"),
            ("B", "trunk_group", t, "conversation_seconds", 1000, 900, 100, Decimal("10.00"), "mismatch", False, True,
             date(2026, 11, 2), "r")]
    from schemas.tables import USAGE_ASSURANCE

    comparison = spark.createDataFrame(rows, USAGE_ASSURANCE)
    rated = spark.createDataFrame([(date(2026, 11, 2), "B", "EUR", Decimal("9.0"), 900)],
                                  "local_date date, object_id string, currency string, cost decimal(24,10), usage long")
    summary = {r.object_id: r for r in assure.daily_summary(comparison, rated).collect()}
    assert summary["S"].leakage == 0 and summary["S"].flagged_periods == 0
    assert summary["B"].leakage == 100 and summary["B"].leakage_value == Decimal("1.0000")    # 100 s at 0.01/s
    assert summary["B"].leakage_pct == Decimal("10.00") and summary["S"].currency is None


def test_a_leak_over_budget_names_the_worst_objects():
    row = lambda obj, carried, leaked: SimpleNamespace(metric="conversation_seconds", object_id=obj, carried=carried,  # noqa: E731
                                                       leakage=leaked, currency="EUR", leakage_value=Decimal("1.5"))
    rows = [row("TG1", 1000, 300), row("TG2", 1000, 0), row("TG3", 2000, 100)]
    verdict = assure.judge(rows, budget_pct=5.0, day=date(2026, 11, 2))
    assert len(verdict.breaches) == 1 and "10.00 % > budget 5.0 %" in verdict.breaches[0]
    assert "worst TG1 (300 s), TG3 (100 s)" in verdict.breaches[0]
    assert not assure.judge(rows, budget_pct=10.0, day=date(2026, 11, 2)).breaches


def _file(values):
    name, text = measurement_file("MSC01", [("TG0101", TRUNK_LDN.format(element="MSC01", object_id="TG0101"))],
                                  ("CALL.OutAnsweredCalls", "CALL.OutConversationTime"),
                                  int(datetime(2026, 11, 2, 9, tzinfo=BERLIN).timestamp()), values, set(), BERLIN)
    return name, text


@pytest.mark.parametrize("mangle, detail", [
    (lambda t: t[: len(t) // 3], "not well-formed XML"),
    (lambda t: t.replace("measCollecFile", "measDataFile"), "not <measCollecFile>"),
    (lambda t: t.replace('<r p="2">', '<r p="7">', 1), "has no measType"),
    (lambda t: t.replace('endTime="2026-11-02T09:15:00+01:00"', ""), "lacks granPeriod"),
    (lambda t: "\ufeffnot xml at all, garbage \x00\x01", "not well-formed XML"),
])
def test_malformed_measurement_files_are_rejected_whole(mangle, detail):
    name, text = _file({})
    assert measurements.inspect_measurement_file(name, text.encode()).record_count == 8
    found = measurements.inspect_measurement_file(name, mangle(text).encode())
    assert found.reason_code == R.BAD_XML and detail in found.reason_detail


def test_measurement_files_are_parsed_by_spark_into_typed_rows(spark, tmp_path):
    name, text = _file({})
    (tmp_path / name).write_text(text.replace('<r p="1">0</r>', '<r p="1">n/a</r>', 1))
    assert "+" in name
    bronze = measurements.to_bronze(measurements.read_measurement_files(spark, [str(tmp_path / name)]),
                                    measurements.F.lit(name), "run", date(2026, 11, 2))
    typed = measurements.standardise(bronze).orderBy("line_number").collect()
    assert len(typed) == 8 and [r.line_number for r in typed] == list(range(1, 9))
    first, second = typed[0], typed[1]
    assert (first.reason_code, first.reason_detail) == (R.BAD_VALUE, "counter value not a non-negative integer: n/a")
    assert (second.object_type, second.object_id, second.metric, second.value) == (
        "trunk_group", "TG0101", "conversation_seconds", 0)
    assert second.period_start == datetime(2026, 11, 2, 8, 0) and second.period_end == datetime(2026, 11, 2, 8, 15)


def test_the_run_reads_only_the_event_dates_its_window_can_hold(spark, conf):
    """gold/rated_events holds every day ever rated and silver/events every event: the run reads the
    partitions of its window's dates. An old partition of each is deleted here: reading it would fail."""
    from datetime import timedelta
    from pathlib import Path

    from jobs.common.delta_io import merge
    from pyspark.sql import functions as F
    from schemas.tables import RATED_EVENTS

    day, old = date(2026, 11, 5), date(2026, 9, 1)
    events, rated = [], []
    for event_date, event_id in ((day, "in-window"), (old, "old")):
        start = datetime.combine(event_date, datetime.min.time()).replace(hour=9)
        events.append({**_event("voice", start, 60, tkgp="TG0101"), "event_id": event_id, "event_date": event_date,
                       "category": "call", "currency": "EUR"})
        rated.append({**{k: events[-1][k] for k in RATED_EVENTS.fieldNames() if k in events[-1]},
                      "cost": Decimal("0.5"), "cost_exact": Decimal("0.5"), "run_id": "rate-x"})
    for layer, table, rows, schema in (("silver", "events", events, EVENTS), ("gold", "rated_events", rated, RATED_EVENTS)):
        path = conf.table_path(layer, table)
        merge(spark.createDataFrame(rows, schema), path, ["event_id"], partition_by=["event_date"])
        for data_file in Path(path, f"event_date={old}").glob("*.parquet"):
            data_file.unlink()

    assert assure.run(spark, conf, day).details["assurance"]["settled_day"] == (day - timedelta(days=1)).isoformat()
    window = F.col("event_date").between(day - timedelta(days=1), day)
    in_window = spark.createDataFrame(events[:1], EVENTS)
    by_object = assure._rated_by_object(spark, conf, in_window, window).collect()
    assert [(r.local_date, r.object_id, str(r.cost), r.usage) for r in by_object] == [(day, "TG0101", "0.5000000000", 60)]
