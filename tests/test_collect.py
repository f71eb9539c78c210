import gzip

import pytest

from jobs.collect import inspect_file, to_bronze
from schemas import reason_codes as R
from schemas.landing import ASTERISK, SMS, VOICE

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
