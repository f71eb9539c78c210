from datetime import date, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from jobs.cli import main as cli
from jobs.common.audit import ConservationError, RunRecord
from jobs.common.config import load_config
from jobs.common.reference import attach_subscriber, subscriber_periods
from jobs.standardise import standardise_voice
from jobs.validate import (KeyIndexLayoutError, apply_rules, classify, classify_once, evaluate_groups, find_repeats,
                           key_event_dates, key_occurrences, mark_duplicates, not_singles, read_key_window,
                           run_bounds, tally_outcomes, write_record_keys)
from schemas import reason_codes as R
from schemas.landing import VOICE
from schemas.tables import DUPLICATES, RECORD_KEYS, bronze_schema

CONF = load_config(environ={})
TZ = CONF.operator.timezone
GOOD = {"record_type": "MOC", "msc_id": "MSC01", "call_reference": "1", "sequence_number": "", "cause_for_term": "0",
        "served_imsi": "262011", "served_msisdn": "491511000001", "calling_number": "491511000001",
        "called_number": "030123456", "seizure_time": "2026-11-02T09:59:50Z", "answer_time": "2026-11-02T10:00:00Z",
        "release_time": "2026-11-02T10:01:30Z", "call_duration": "90", "msc_incoming_tkgp": "I", "msc_outgoing_tkgp": "TG01",
        "cell_id": "1"}


def voice_bronze(spark, *changes, parse_error=None):
    rows = []
    for line, change in enumerate(changes, start=2):
        record = {**GOOD, "call_reference": str(line), **change}
        rows.append(tuple(record[c] for c in VOICE.columns) + (None, "cdr/voice/f.csv", line, "raw", parse_error, "r", date(2026, 11, 2)))
    return spark.createDataFrame(rows, bronze_schema(VOICE))


def subscribers(spark):
    raw = spark.createDataFrame([("ACC1", "491511000001", "i", "P_BASIC", "1", "EUR", "DE", "2026-10-01", "")],
                                "account_id string, msisdn string, imsi string, plan_id string, bill_cycle_day string, "
                                "currency string, tax_region string, valid_from string, valid_to string")
    return subscriber_periods(raw, "Europe/Berlin")


def checked(spark, bronze):
    typed = standardise_voice(bronze, CONF.operator)
    return apply_rules(attach_subscriber(typed, subscribers(spark)), run_bounds(CONF, date(2026, 11, 2)))


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"served_msisdn": ""}, R.MISSING_FIELD),
    ({"record_type": "XYZ"}, R.BAD_VALUE),
    ({"answer_time": "2026-13-45T25:61:00Z"}, R.BAD_TIMESTAMP),
    ({"answer_time": "2026-11-03T00:20:00+01:00"}, R.FUTURE_TIMESTAMP),
    ({"release_time": "2026-11-02T25:00:00Z"}, R.BAD_TIMESTAMP),          # not the start, still bad
    ({"call_duration": "-42"}, R.NEGATIVE_USAGE),
    ({"call_duration": "9999999"}, R.USAGE_TOO_LARGE),
    ({"call_duration": "12s"}, R.BAD_VALUE),
    ({"called_number": "+49AB12C"}, R.BAD_NUMBER),
    ({"served_msisdn": "49999000000"}, R.UNKNOWN_SUBSCRIBER),
    ({"answer_time": "2026-09-30T21:59:59Z"}, R.UNKNOWN_SUBSCRIBER),   # before the subscriber's valid_from
    # the oldest start a run of 2026-11-02 accepts: local midnight (Berlin, CEST) 62 days before
    ({"answer_time": "2026-08-31T22:00:00Z"}, R.UNKNOWN_SUBSCRIBER),   # accepted as to its age (the subscriber came later)
    ({"answer_time": "2026-08-31T21:59:59Z"}, R.STALE_EVENT),
])
def test_each_rule_gives_its_reason_code(spark, change, reason):
    row = checked(spark, voice_bronze(spark, change)).first()
    assert row.reason_code == reason, row.reason_detail
    if reason:
        assert row.reason_detail


def test_malformed_rows_are_reported_first(spark):
    row = checked(spark, voice_bronze(spark, {}, parse_error="MALFORMED_ROW: 3 fields, header has 16")).first()
    assert row.reason_code == R.MALFORMED_ROW


def repeats_of(spark, batch, index=None):
    """The batch's repeats against `index` (none by default)."""
    return find_repeats(key_occurrences(batch, TZ), index if index is not None else spark.createDataFrame([], RECORD_KEYS))


def _indexed(spark, *entries):
    """Key index rows: (key, source_file, line_number, key_date, event_date)."""
    return spark.createDataFrame([("voice", key, source_file, line, "r0", seen, day)
                                  for key, source_file, line, seen, day in entries], RECORD_KEYS)


def _outcomes(spark, batch, prior):
    return {r.line_number: r for r in classify(mark_duplicates(batch, repeats_of(spark, batch, prior))).collect()}


def test_duplicates_within_a_batch_and_against_earlier_runs(spark):
    batch = checked(spark, voice_bronze(spark, {"call_reference": "A"}, {"call_reference": "A"}, {"call_reference": "B"},
                                        {"call_reference": "C"}))
    prior = _indexed(spark, ("MSC01|C|1", "cdr/voice/old.csv", 9, date(2026, 11, 1), date(2026, 11, 2)))
    marked = _outcomes(spark, batch, prior)
    assert marked[2].outcome == "single" and marked[3].outcome == "duplicate" and marked[3].first_line_number == 2
    assert marked[4].outcome == "single"
    assert marked[5].outcome == "duplicate" and marked[5].first_source_file == "cdr/voice/old.csv"
    # rerunning a batch whose keys are already indexed (by itself) marks nothing new
    own = _indexed(spark, ("MSC01|A|1", "cdr/voice/f.csv", 2, date(2026, 11, 2), date(2026, 11, 2)))
    again = {line: r.outcome for line, r in _outcomes(spark, batch, own).items()}
    assert again[2] == "single" and again[3] == "duplicate"


@pytest.mark.parametrize("indexed_event_date, outcome", [
    (date(2026, 11, 2), "duplicate"),
    (date(2026, 11, 1), "duplicate"),     # a day apart: a re-sent record whose start was corrected
    (date(2026, 11, 3), "duplicate"),
    (date(2026, 10, 31), "single"),       # further apart: the switch has reused the call reference
    (date(2026, 8, 2), "single"),
    (None, "single"),                     # the indexed record's start was unreadable, this one's is not
])
def test_an_indexed_key_is_a_repeat_only_near_its_own_event_date(spark, indexed_event_date, outcome):
    batch = checked(spark, voice_bronze(spark, {"call_reference": "A"}))     # starts 2026-11-02 11:00 in Berlin
    prior = _indexed(spark, ("MSC01|A|1", "cdr/voice/old.csv", 9, date(2026, 11, 1), indexed_event_date))
    assert _outcomes(spark, batch, prior)[2].outcome == outcome


def test_a_record_with_an_unreadable_start_repeats_an_indexed_one_without_a_date(spark):
    batch = checked(spark, voice_bronze(spark, {"call_reference": "A", "answer_time": "garbage", "seizure_time": "x"}))
    undated = _indexed(spark, ("MSC01|A|1", "cdr/voice/old.csv", 9, date(2026, 11, 1), None))
    dated = _indexed(spark, ("MSC01|A|1", "cdr/voice/old.csv", 9, date(2026, 11, 1), date(2026, 11, 2)))
    assert _outcomes(spark, batch, undated)[2].outcome == "duplicate"
    assert _outcomes(spark, batch, dated)[2].reason_code == R.BAD_TIMESTAMP


def test_of_two_indexed_entries_near_a_record_the_one_seen_first_is_its_original(spark):
    batch = checked(spark, voice_bronze(spark, {"call_reference": "A"}))
    prior = _indexed(spark, ("MSC01|A|1", "cdr/voice/a_later.csv", 4, date(2026, 11, 5), date(2026, 11, 3)),
                     ("MSC01|A|1", "cdr/voice/z_earlier.csv", 7, date(2026, 11, 2), date(2026, 11, 1)))
    row = _outcomes(spark, batch, prior)[2]
    assert (row.outcome, row.first_source_file, row.first_line_number) == ("duplicate", "cdr/voice/z_earlier.csv", 7)


def test_the_key_index_is_read_and_merged_by_event_date_near_the_batch_s_own(spark, tmp_path):
    """The index grows by a day's keys every day: a batch reads only the partitions of its events'
    dates and the days either side, and a rerun adds nothing."""
    path = str(tmp_path / "record_keys")
    days = [date(2026, 9, 1) + timedelta(days=k) for k in range(70)]
    run_date = days[-1]
    keys = _indexed(spark, *[(f"MSC01|{k}|1", "cdr/voice/old.csv", k, run_date, day) for k, day in enumerate(days)],
                    ("MSC01|X|1", "cdr/voice/old.csv", 99, run_date, None))
    write_record_keys(keys, path, set(days) | {None}, run_date)
    write_record_keys(keys, path, set(days) | {None}, run_date)            # the rerun of that day adds nothing
    stored = spark.read.format("delta").load(path)
    assert stored.count() == 71 and all("event_date=" in f for f in stored.inputFiles())

    near = read_key_window(spark, path, {date(2026, 10, 15)})
    assert sorted(r.event_date for r in near.collect()) == [date(2026, 10, 14), date(2026, 10, 15), date(2026, 10, 16)]
    assert len(near.inputFiles()) == 3                                      # three partitions read, not 71
    undated = read_key_window(spark, path, {None})
    assert [r.record_key for r in undated.collect()] == ["MSC01|X|1"]
    batch = checked(spark, voice_bronze(spark, {}, {"answer_time": "x", "seizure_time": "y"}))
    assert key_event_dates(key_occurrences(batch, TZ)) == {date(2026, 11, 2), None}


def test_a_run_s_key_merge_skips_the_files_of_earlier_runs_in_the_partitions_it_writes(spark, tmp_path):
    """Today's late records share yesterday's event-date partition with all of yesterday's keys;
    only a rerun of today can match, so the MERGE must not read yesterday's files. They are
    deleted here: reading them would fail."""
    import json
    from pathlib import Path

    path = tmp_path / "record_keys"
    yesterday, today = date(2026, 11, 3), date(2026, 11, 4)
    earlier = _indexed(spark, *[(f"MSC01|{k}|1", "cdr/voice/y.csv", k, yesterday, yesterday) for k in range(50)])
    write_record_keys(earlier, str(path), {yesterday}, yesterday)
    commits = sorted((path / "_delta_log").glob("*.json"))
    for line in commits[-1].read_text().splitlines():
        if "add" in json.loads(line):
            Path(path / json.loads(line)["add"]["path"]).unlink()

    late = _indexed(spark, ("MSC01|L|1", "cdr/voice/t.csv", 2, today, yesterday))
    write_record_keys(late, str(path), {yesterday}, today)
    write_record_keys(late, str(path), {yesterday}, today)                  # the rerun matches its own key
    todays = read_key_window(spark, str(path), {today}).where(F.col("key_date") == today)
    assert [r.record_key for r in todays.collect()] == ["MSC01|L|1"]


def test_an_index_of_the_earlier_layout_is_refused_and_rebuilt_from_bronze(spark, conf, capsys,
                                                                           session_settings_for_the_cli):
    """An index partitioned by the day keys were first seen (no event dates) cannot be read by
    event date: the run stops with the command that rebuilds it from bronze and silver/duplicates."""
    bronze = voice_bronze(spark, {"call_reference": "A"}, {"call_reference": "A"}, {"call_reference": "B"})
    bronze.write.format("delta").save(conf.table_path("bronze", "cdr_voice"))
    spark.createDataFrame([("voice", "MSC01|A|1", "cdr/voice/f.csv", 3, "cdr/voice/f.csv", 2, "r0", date(2026, 11, 2))],
                          DUPLICATES).write.format("delta").save(conf.table_path("silver", "duplicates"))
    index = conf.table_path("silver", "record_keys")
    earlier = spark.createDataFrame([("voice", "MSC01|A|1", "cdr/voice/f.csv", 2, "r0", date(2026, 11, 2))],
                                    "record_type string, record_key string, source_file string, line_number long, "
                                    "run_id string, key_date date")
    earlier.write.format("delta").partitionBy("key_date").save(index)
    with pytest.raises(KeyIndexLayoutError, match="rebuild-key-index"):
        read_key_window(spark, index, {date(2026, 11, 2)})

    assert cli(["--warehouse", conf.paths.warehouse, "rebuild-key-index"]) == 0
    assert "keys indexed=2" in capsys.readouterr().out
    rebuilt = read_key_window(spark, index, {date(2026, 11, 2)}).orderBy("line_number").collect()
    assert [(r.record_key, r.line_number, r.key_date, r.event_date) for r in rebuilt] == [
        ("MSC01|A|1", 2, date(2026, 11, 2), date(2026, 11, 2)), ("MSC01|B|1", 4, date(2026, 11, 2), date(2026, 11, 2))]
    assert all(r.run_id.startswith("rebuild_key_index-") for r in rebuilt)
    assert all("event_date=" in f for f in spark.read.format("delta").load(index).inputFiles())
    assert spark.conf.get("spark.sql.shuffle.partitions") == str(conf.spark.shuffle_partitions)


def _parts(spark, *parts):
    return spark.createDataFrame([("voice", "g", seq, last, datetime(2026, 11, 2, 10, 0, 0)) for seq, last in parts],
                                 "record_type string, group_key string, sequence int, is_last_part boolean, event_start timestamp")


@pytest.mark.parametrize("parts, expiry, status", [
    (((1, False), (2, False), (3, True)), datetime(2026, 11, 1), "assembled"),
    (((3, True), (1, False), (2, False)), datetime(2026, 11, 1), "assembled"),       # out of order
    (((1, False), (3, True)), datetime(2026, 11, 1), "pending"),                       # part 2 missing
    (((1, False), (2, False)), datetime(2026, 11, 1), "pending"),                      # not closed yet
    (((1, False), (2, False)), datetime(2026, 11, 3), "expired"),                      # waited too long
])
def test_partial_groups(spark, parts, expiry, status):
    assert evaluate_groups(_parts(spark, *parts), expiry).first().group_status == status


def test_conservation_check_fails_when_a_record_is_lost():
    record = RunRecord("validate", date(2026, 11, 2), records_in=10, quarantined=2, duplicates=1, pending=1)
    record.check_conservation(valid=6)
    with pytest.raises(ConservationError, match="records_in=10"):
        record.check_conservation(valid=5)


def _stored_parts(spark, *rows):
    from jobs.validate import PARTIAL_COLUMNS

    values = []
    for group, key, seq, last, status in rows:
        record = {c: None for c in PARTIAL_COLUMNS}
        record.update(record_type="voice", record_key=key, group_key=group, sequence=seq, is_last_part=last,
                      event_start=datetime(2026, 11, 1, 10, 0), usage=60, chargeable=True)
        values.append(tuple(record[c] for c in PARTIAL_COLUMNS) + (status, "r0"))
    schema = ("record_type string, record_key string, group_key string, sequence int, is_last_part boolean, "
              "source_file string, line_number long, raw_record string, served_msisdn string, destination string, "
              "event_start timestamp, usage long, chargeable boolean, category string, msc_outgoing_tkgp string, "
              "apn string, serving_plmn string, account_id string, plan_id string, currency string, tax_region string, "
              "status string, run_id string")
    return spark.createDataFrame(values, schema)


def test_a_late_closing_part_revives_an_expired_group(spark):
    from jobs.validate import settle_partials

    stored = _stored_parts(spark, ("MSC01|9", "k1", 1, False, "expired"), ("MSC01|9", "k2", 2, False, "expired"),
                           ("MSC01|8", "k0", 1, True, "assembled"))
    late = _stored_parts(spark, ("MSC01|9", "k3", 3, True, "pending"))
    judged = {r.record_key: r for r in settle_partials(stored, late, datetime(2026, 11, 3)).collect()}
    assert {k: (r.status, r.group_status, r.is_new) for k, r in judged.items()} == {
        "k1": ("expired", "assembled", False), "k2": ("expired", "assembled", False), "k3": ("pending", "assembled", True)}
    # the same part seen again (a rerun) is not new, and an assembled-only group is not reopened
    rerun = settle_partials(stored.unionByName(late), late, datetime(2026, 11, 3)).collect()
    assert not any(r.is_new for r in rerun) and "k0" not in {r.record_key for r in rerun}


def _write_subscriber(conf):
    from pathlib import Path

    from schemas.landing import SUBSCRIBER_COLUMNS

    folder = Path(conf.paths.reference)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subscribers.csv").write_text(",".join(SUBSCRIBER_COLUMNS) + "\n"
                                            + "ACC1,491511000001,,P_BASIC,1,EUR,DE,2026-01-01,\n")


def _voice_parts_of_day(spark, day: date, source_file: str, *changes):
    """voice_bronze rows ingested on `day` from `source_file`, starting on `day`."""
    on_day = {name: GOOD[name].replace("2026-11-02", day.isoformat()) for name in ("seizure_time", "answer_time", "release_time")}
    return (voice_bronze(spark, *[{**on_day, **change} for change in changes])
            .withColumn("source_file", F.lit(source_file)).withColumn("ingest_date", F.lit(day)))


def test_a_day_s_run_reads_only_open_parts_and_the_parts_of_its_own_event_dates(spark, conf):
    """silver/partial_records keeps every part ever seen: a run reads the parts of open groups and
    those of its new parts' event dates (where a rerun finds its own), not every assembled part of
    earlier days. Those of the first day are deleted here: reading them would fail."""
    from pathlib import Path

    from delta.tables import DeltaTable

    from jobs import validate
    from jobs.common.delta_io import merge, read_table
    from schemas.tables import BRONZE_TABLES

    _write_subscriber(conf)
    conf = conf.model_copy(update={"validation": conf.validation.model_copy(update={"mostly": 0.0})})
    bronze_path, parts_path = conf.table_path("bronze", BRONZE_TABLES["voice"]), conf.table_path("silver", "partial_records")
    first, second = date(2026, 11, 2), date(2026, 11, 3)
    closed = [{"call_reference": "C", "sequence_number": "1", "cause_for_term": "1"},
              {"call_reference": "C", "sequence_number": "2", "cause_for_term": "0"}]
    merge(_voice_parts_of_day(spark, first, "cdr/voice/a.csv", *closed,
                              {"call_reference": "O", "sequence_number": "1", "cause_for_term": "1"}),
          bronze_path, ["source_file", "line_number"])
    assert validate.run(spark, conf, first).details["outcomes"]["parts"] == {"assembled": 2, "pending": 1}
    assert DeltaTable.forPath(spark, parts_path).detail().first().partitionColumns == ["status", "event_date"]
    assembled_first = Path(parts_path) / "status=assembled" / f"event_date={first}"
    for parquet in assembled_first.glob("*.parquet"):
        parquet.unlink()

    merge(_voice_parts_of_day(spark, second, "cdr/voice/b.csv",
                              {"call_reference": "O", "sequence_number": "2", "cause_for_term": "0"}),
          bronze_path, ["source_file", "line_number"])
    closing = validate.run(spark, conf, second)
    assert closing.details["outcomes"]["parts"] == {"assembled": 1}
    assert validate.run(spark, conf, second).details["outcomes"]["parts"] == {"assembled": 1}         # the rerun
    stored = read_table(spark, parts_path).where(F.col("event_date") == second).collect()
    assert [(r.record_key, r.status) for r in stored] == [("MSC01|O|2", "assembled")]
    events = read_table(spark, conf.table_path("silver", "events")).collect()
    assert sorted((r.source_keys, r.usage) for r in events) == [(["MSC01|C|1", "MSC01|C|2"], 180),
                                                                (["MSC01|O|1", "MSC01|O|2"], 180)]


def test_partial_records_of_the_earlier_layout_are_rewritten_with_event_dates(spark, conf):
    """A table written before partitioning by status and event date is rewritten so, once: every
    part kept, each under the local date of its start."""
    from delta.tables import DeltaTable

    from jobs.validate import ensure_partials_layout

    path = conf.table_path("silver", "partial_records")
    earlier = _stored_parts(spark, ("MSC01|9", "k1", 1, False, "expired"), ("MSC01|8", "k0", 1, True, "assembled"))
    earlier = earlier.withColumn("event_start", F.when(F.col("record_key") == "k0", F.lit(datetime(2026, 10, 31, 23, 30)))
                                 .otherwise(F.col("event_start")))
    earlier.write.format("delta").save(path)
    ensure_partials_layout(spark, conf, path)
    ensure_partials_layout(spark, conf, path)                                 # once: the second finds the layout
    table = DeltaTable.forPath(spark, path)
    assert table.detail().first().partitionColumns == ["status", "event_date"]
    assert table.history().count() == 2                                      # the first write, one rewrite
    rows = {r.record_key: (r.status, r.event_date) for r in table.toDF().collect()}
    # 23:30 UTC on Oct 31 is already Nov 1 in Berlin
    assert rows == {"k1": ("expired", date(2026, 11, 1)), "k0": ("assembled", date(2026, 11, 1))}


def test_recycle_releases_records_once_the_subscriber_exists(spark, conf, tmp_path):
    """UNKNOWN_SUBSCRIBER records (a single call, and both parts of a partial call) wait in
    quarantine; after the CRM adds the number, `recycle` makes them events exactly once and the
    rate stage's recycle rates them. Records quarantined for other reasons are not touched."""
    import csv

    from jobs import rate, validate
    from jobs.common.delta_io import merge, read_table
    from schemas.landing import SUBSCRIBER_COLUMNS
    from schemas.tables import BRONZE_TABLES
    from tests.test_rate_stage import _plan

    def subscribers_csv(*rows):
        conf_ref = tmp_path / "reference"
        conf_ref.mkdir(exist_ok=True)
        with (conf_ref / "subscribers.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(SUBSCRIBER_COLUMNS)
            for account, msisdn in rows:
                writer.writerow([account, msisdn, "", "P_BASIC", "1", "EUR", "DE", "2026-01-01", ""])

    new_number = "491511000099"
    part = {"served_msisdn": new_number, "call_reference": "P", "cause_for_term": "1"}
    bronze = voice_bronze(spark, {}, {"served_msisdn": new_number}, {**part, "sequence_number": "1"},
                          {**part, "sequence_number": "2", "cause_for_term": "0"}, {"call_duration": "-5"})
    merge(bronze, conf.table_path("bronze", BRONZE_TABLES["voice"]), ["source_file", "line_number"])
    subscribers_csv(("ACC1", "491511000001"))
    conf = conf.with_paths(rules=str(_plan(tmp_path / "plan", ["49"])))
    conf = conf.model_copy(update={"validation": conf.validation.model_copy(update={"mostly": 0.0})})
    day = date(2026, 11, 2)

    first = validate.run(spark, conf, day)
    assert (first.records_in, first.rated, first.quarantined) == (5, 1, 4)
    assert rate.run(spark, conf, day).rated == 1                           # the day's rating: its one event
    assert validate.recycle(spark, conf).rated == 0                     # CRM not fixed yet: still suspended
    attempts = {r.line_number: (r.status, r.attempts) for r in read_table(spark, conf.table_path("silver", "quarantine")).collect()}
    assert attempts == {3: ("suspended", 2), 4: ("suspended", 2), 5: ("suspended", 2), 6: ("suspended", 1)}

    subscribers_csv(("ACC1", "491511000001"), ("ACC9", new_number))
    recycled = validate.recycle(spark, conf)
    assert (recycled.records_in, recycled.rated, recycled.quarantined, recycled.pending) == (3, 3, 0, 0)
    quarantine = {r.line_number: (r.status, r.reason_code) for r in
                  read_table(spark, conf.table_path("silver", "quarantine")).collect()}
    assert quarantine == {3: ("recycled", R.UNKNOWN_SUBSCRIBER), 4: ("recycled", R.UNKNOWN_SUBSCRIBER),
                          5: ("recycled", R.UNKNOWN_SUBSCRIBER), 6: ("suspended", R.NEGATIVE_USAGE)}
    events = read_table(spark, conf.table_path("silver", "events"))
    assert sorted((r.account_id, r.usage, len(r.source_keys)) for r in events.collect()) == [
        ("ACC1", 90, 1), ("ACC9", 90, 1), ("ACC9", 180, 2)]

    again = validate.recycle(spark, conf)                               # idempotent: nothing left to retry
    assert again.records_in == 0 and events.count() == 3

    # the CRM was fixed long after the calls, beyond the lookback of the sweep for unrated events:
    # what validate's recycle released is rated all the same, or it would never be billed
    rated = rate.recycle(spark, conf, today=day + timedelta(days=conf.validation.max_event_age_days + 30))
    assert (rated.details["newly_rated"], rated.rated) == (2, 2)
    assert read_table(spark, conf.table_path("gold", "rated_events")).count() == 3
    assert rate.recycle(spark, conf, today=day + timedelta(days=conf.validation.max_event_age_days + 30)).records_in == 0


def test_a_row_that_failed_to_parse_is_never_the_first_occurrence_of_a_key(spark):
    """A garbled copy of a record earlier in the file is quarantined; the good record is billed,
    not marked a duplicate of the garbled one."""
    garbled = voice_bronze(spark, {"call_reference": "A"}, parse_error="MALFORMED_ROW: invalid UTF-8 bytes")
    good = voice_bronze(spark, {"call_reference": "A"}, {"call_reference": "A"}).withColumn("line_number", F.col("line_number") + 1)
    batch = checked(spark, garbled).unionByName(checked(spark, good))
    marked = classify(mark_duplicates(batch, repeats_of(spark, batch)))
    assert sorted((r.line_number, r.outcome, r.first_line_number) for r in marked.collect()) == [
        (2, "quarantined", None), (3, "single", None), (4, "duplicate", 3)]


def test_finding_repeats_shuffles_only_key_columns_never_the_wide_rows(spark):
    """The batch's wide rows (raw record, every typed field) are not shuffled to mark repeats: only
    the key columns are grouped, and the repeats found are broadcast back onto the batch. With
    broadcast off (too many repeats) the marks are the same."""
    import re

    batch = checked(spark, voice_bronze(spark, {"call_reference": "A"}, {"call_reference": "A"}, {"call_reference": "B"}))
    batch = batch.localCheckpoint()             # the plan from here on is what marking repeats adds
    repeats = repeats_of(spark, batch)
    marked = mark_duplicates(batch, repeats)
    plan = spark._jvm.PythonSQLUtils.explainString(marked._jdf.queryExecution(), "formatted")
    shuffles = [node for node in re.split(r"\n(?=\(\d+\) )", plan) if re.match(r"\(\d+\) (Shuffle)?Exchange", node)]
    assert shuffles and not [node for node in shuffles if "raw_record" in node], plan
    outcome = lambda frame: sorted((r.line_number, r.outcome, r.first_line_number) for r in classify(frame).collect())  # noqa: E731
    assert outcome(marked) == outcome(mark_duplicates(batch, repeats, broadcast=False)) == [
        (2, "single", None), (3, "duplicate", 2), (4, "single", None)]


def test_the_batch_is_classified_once_and_what_is_built_on_it_starts_from_its_rows(spark):
    """Quarantine rows, events, parts, duplicates, keys and the expectations all read the classified
    batch: its rows are computed once, and their plans start from them, not from bronze again;
    they hold the raw record only where a table keeps it."""
    batch = checked(spark, voice_bronze(spark, {"call_reference": "A"}, {"call_reference": "A"}, {"call_reference": "B"},
                                        {"call_reference": "C", "call_duration": "-42"},
                                        {"call_reference": "D", "sequence_number": "2"}))
    once = classify_once(batch, repeats_of(spark, batch))
    leaves = once._jdf.queryExecution().analyzed().collectLeaves()
    assert (leaves.size(), leaves.apply(0).nodeName()) == (1, "LogicalRDD")
    # the raw record is kept only where a table stores it: the quarantine row, the stored part
    assert sorted((r.line_number, r.outcome, r.raw_record) for r in once.collect()) == [
        (2, "single", None), (3, "duplicate", None), (4, "single", None), (5, "quarantined", "raw"), (6, "part", "raw")]


def test_one_pass_counts_the_outcomes_and_the_local_dates_of_the_events_they_become(spark):
    """The run's counts and the days its events MERGE reads come from one pass: singles by the
    operator-zone date of their start (23:30 UTC on 1 November is 2 November in Berlin)."""
    batch = checked(spark, voice_bronze(spark, {"answer_time": "2026-11-01T23:30:00Z", "seizure_time": "2026-11-01T23:29:00Z"},
                                        {}, {"call_reference": "2"}, {"call_duration": "-42"}, {"sequence_number": "2"}))
    classified = classify_once(batch, repeats_of(spark, batch))
    assert tally_outcomes(classified, CONF) == (
        {"duplicate": 1, "part": 1, "quarantined": 1, "single": 2}, {date(2026, 11, 2)})


def test_the_rows_that_are_not_single_events_get_a_checkpoint_of_their_own(spark):
    """Quarantine, duplicates and partials read only the ~1 % of rows that are not singles, from
    rows of their own, not by a pass over the whole classified batch."""
    batch = checked(spark, voice_bronze(spark, {}, {"call_reference": "2"}, {"call_duration": "-42"},
                                        {"sequence_number": "2"}, {"call_reference": "Z"}))
    others = not_singles(classify_once(batch, repeats_of(spark, batch)))
    leaves = others._jdf.queryExecution().analyzed().collectLeaves()
    assert (leaves.size(), leaves.apply(0).nodeName()) == (1, "LogicalRDD")
    assert sorted((r.line_number, r.outcome) for r in others.collect()) == [
        (3, "duplicate"), (4, "quarantined"), (5, "part")]


def test_the_expectations_scan_a_cached_narrow_copy_of_the_batch_and_release_it(spark, conf, monkeypatch):
    """The suites read only the columns their rules check (never the raw record), from Spark's
    columnar cache, which is dropped once the results are stored; GX caches nothing of its own."""
    from jobs import data_quality
    from schemas.validation_rules import RULES

    batch = checked(spark, voice_bronze(spark, {}, {"call_duration": "-42"}, {"call_reference": "B"}))
    narrow = data_quality.suite_input(batch)
    assert set(narrow.columns) == {"record_type"} | {rule.column for rule in RULES} and "raw_record" not in narrow.columns

    manager = spark._jsparkSession.sharedState().cacheManager()
    cached = lambda: manager.cachedData().size()   # noqa: E731 (the JVM hands out a snapshot per call)
    before, seen = cached(), []
    real_context = data_quality._context

    def spying_context(conf_):
        seen.append(cached() - before)            # plans cached when GX starts: the narrow copy
        return real_context(conf_)

    monkeypatch.setattr(data_quality, "_context", spying_context)
    found = data_quality.validate_batches(spark, conf, batch, run_bounds(CONF, date(2026, 11, 2)), "run-1",
                                          date(2026, 11, 2))
    assert seen == [1] and cached() == before
    assert found["expectations"] == len([r for r in RULES if "voice" in r.record_types])
    # 1 of 3 durations negative: a third, far above the 5 % `mostly` allows
    assert [f.split(":")[0] for f in found["failed"]] == ["voice.expect_column_values_to_be_between(usage)"]
