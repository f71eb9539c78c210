import gzip

import pytest

from jobs.collect import inspect_file, to_bronze
from schemas import reason_codes as R
from schemas.landing import ASTERISK, SMS, VOICE

pytestmark = pytest.mark.generated_code

VOICE_HEADER = ",".join(VOICE.columns).encode()


@pytest.mark.parametrize("name, content, reason", [
    ("a.csv", b"", R.EMPTY_FILE),
    ("a.csv", b"\n\n", R.EMPTY_FILE),
    ("a.csv.gz", b"\x1f\x8b\x08\x00garbage", R.BAD_GZIP),
    ("a.csv.gz", gzip.compress(VOICE_HEADER + b"\nMOC,MSC01")[:-6], R.BAD_GZIP),
    ("a.csv", "record_type,msc_id".encode("utf-16"), R.BAD_ENCODING),
    ("a.csv", b"\x00\x01\x02binary", R.BAD_ENCODING),
    ("a.csv", b"\xff\xfe\xfa,broken header\n1,2", R.BAD_ENCODING),
    ("a.csv", b"record_type,msc_id\nMOC,MSC01\n", R.BAD_HEADER),
    ("a.csv", VOICE_HEADER + b",msc_id\n", R.BAD_HEADER),
])
def test_unreadable_files_are_rejected_with_a_reason(name, content, reason):
    assert inspect_file(name, content, VOICE).reason_code == reason


def test_good_files_count_records_and_keep_their_header():
    body = VOICE_HEADER + b"\n" + b"\n".join([b"x" * 10] * 3) + b"\n"
    for name, content in (("a.csv", body), ("a.csv.gz", gzip.compress(body))):
        found = inspect_file(name, content, VOICE)
        assert found.reason_code is None and found.record_count == 3 and found.header == list(VOICE.columns)


def test_headerless_asterisk_checks_the_field_count():
    assert inspect_file("m.csv", b",".join([b"x"] * 16) + b"\n", ASTERISK).reason_code is None
    assert inspect_file("m.csv", b",".join([b"x"] * 9) + b"\n", ASTERISK).reason_code == R.BAD_HEADER


def test_to_bronze_maps_by_header_name_keeps_extras_and_flags_bad_width(spark):
    header = ["destination_number", "record_type", "smsc_id", "message_reference", "served_msisdn",
              "origination_time", "vendor_note"]
    lines = spark.createDataFrame([
        ("cdr/sms/f.csv", 2, "+4930123,MO_SMS,SMSC01,7,491511000001,2026-11-02T10:00:00Z,hello"),
        ("cdr/sms/f.csv", 3, '"0301,23",MO_SMS,SMSC01,8,491511000001,2026-11-02T10:00:00Z,"say ""hi"""'),
        ("cdr/sms/f.csv", 4, "+4930123,MO_SMS,SMSC01"),
    ], "source_file string, line_number long, raw_record string")
    headers = spark.createDataFrame([("cdr/sms/f.csv", header)], "source_file string, header array<string>")
    from datetime import date

    rows = {r.line_number: r for r in to_bronze(lines, headers, SMS, "run-1", date(2026, 11, 2)).collect()}
    assert rows[2].destination_number == "+4930123" and rows[2].smsc_id == "SMSC01" and rows[2].sms_result is None
    assert rows[2].extra_columns == {"vendor_note": "hello"} and rows[2].parse_error is None
    assert rows[3].destination_number == "0301,23" and rows[3].extra_columns == {"vendor_note": 'say "hi"'}
    assert rows[4].parse_error.startswith(R.MALFORMED_ROW) and rows[4].raw_record == "+4930123,MO_SMS,SMSC01"


def test_to_bronze_reads_each_file_by_its_own_header(spark):
    """Files of one kind in one frame, with their columns in different orders, one with a column
    beyond the canonical ones: each line is mapped by its own file's header."""
    from datetime import date

    lines = spark.createDataFrame([
        ("cdr/sms/a.csv", 2, "SMSC01,7,491511000001,+4930123,2026-11-02T10:00:00Z"),
        ("cdr/sms/b.csv", 2, "2026-11-02T11:00:00Z,+4930999,491511000002,8,SMSC02,x"),
        ("cdr/sms/b.csv", 3, "2026-11-02T11:00:00Z,+4930999"),
    ], "source_file string, line_number long, raw_record string")
    headers = spark.createDataFrame([
        ("cdr/sms/a.csv", ["smsc_id", "message_reference", "served_msisdn", "destination_number", "origination_time"]),
        ("cdr/sms/b.csv", ["origination_time", "destination_number", "served_msisdn", "message_reference", "smsc_id",
                           "vendor_note"]),
    ], "source_file string, header array<string>")
    rows = {(r.source_file, r.line_number): r for r in to_bronze(lines, headers, SMS, "run-1", date(2026, 11, 2)).collect()}
    a, b, short = rows[("cdr/sms/a.csv", 2)], rows[("cdr/sms/b.csv", 2)], rows[("cdr/sms/b.csv", 3)]
    assert (a.smsc_id, a.message_reference, a.destination_number, a.origination_time) == (
        "SMSC01", "7", "+4930123", "2026-11-02T10:00:00Z")
    assert a.record_type is None and a.extra_columns == {} and a.parse_error is None
    assert (b.smsc_id, b.message_reference, b.destination_number, b.origination_time) == (
        "SMSC02", "8", "+4930999", "2026-11-02T11:00:00Z")
    assert b.extra_columns == {"vendor_note": "x"}
    assert short.parse_error == f"{R.MALFORMED_ROW}: 2 fields, header has 6"
    assert short.smsc_id is None and short.extra_columns is None


def test_headerless_to_bronze_takes_the_canonical_order_with_or_without_the_optional_tail(spark):
    from datetime import date

    full = [f"v{i}" for i in range(len(ASTERISK.columns))]
    short = full[: len(ASTERISK.columns) - len(ASTERISK.optional_tail)]
    lines = spark.createDataFrame([("cdr/asterisk/m.csv", 1, ",".join(full)), ("cdr/asterisk/m.csv", 2, ",".join(short)),
                                   ("cdr/asterisk/m.csv", 3, "a,b,c")],
                                  "source_file string, line_number long, raw_record string")
    rows = {r.line_number: r.asDict() for r in to_bronze(lines, None, ASTERISK, "run-1", date(2026, 11, 2)).collect()}
    assert [rows[1][c] for c in ASTERISK.columns] == full and rows[1]["extra_columns"] == {}
    assert [rows[2][c] for c in ASTERISK.columns] == short + [None] * len(ASTERISK.optional_tail)
    assert rows[2]["parse_error"] is None
    assert rows[3]["parse_error"] == f"{R.MALFORMED_ROW}: 3 fields, header has {len(short)}"
