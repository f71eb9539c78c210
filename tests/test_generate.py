import csv
import filecmp
import gzip
import json
from datetime import date

from jobs.common.config import PROJECT_ROOT
from jobs.generate.cdrs import GeneratorSettings, generate
from jobs.generate.tariff import write_default_plan
from schemas.landing import CDR_KINDS, SUBSCRIBER_COLUMNS


def _generate(out, **settings):
    return generate(GeneratorSettings(out=out, seed=7, subscribers=60, start=date(2026, 11, 2), days=2, events_per_day=300,
                                      **settings))


def _read(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return list(csv.reader(handle))


def test_same_seed_gives_byte_identical_files(tmp_path):
    _generate(tmp_path / "a")
    _generate(tmp_path / "b")
    comparison = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    assert not comparison.diff_files


def test_files_parse_back_with_the_spec_columns(tmp_path):
    _check_files_parse_back(tmp_path, _generate(tmp_path), files_per_day=lambda kind: 2)


def test_a_large_day_is_rotated_into_many_files_whose_planted_faults_keep_their_lines(tmp_path):
    """A switch closes a file every so many records: a big day is many files, not two huge ones
    (collect reads a file in one piece), and every planted fault still points at its line."""
    summary = _generate(tmp_path, records_per_file=25)
    per_day = {kind.name: max(2, -(-summary["records"][kind.name] // 2 // 25)) for kind in CDR_KINDS}
    assert per_day["voice"] > 4
    _check_files_parse_back(tmp_path, summary, files_per_day=lambda kind: per_day[kind.name])


def _check_files_parse_back(tmp_path, summary, files_per_day):
    bad = _read(tmp_path / "expected" / "bad_records.csv")[1:]
    for kind in CDR_KINDS:
        files = sorted((tmp_path / "landing" / kind.folder).glob("*.csv*"))
        # two days; a day's records (late ones carried over) split evenly, never past the limit
        assert abs(len(files) - 2 * files_per_day(kind)) <= 2, kind.name
        assert sum(len(_read(p)) - kind.has_header for p in files) == summary["records"][kind.name], kind.name
        for path in files:
            rows = _read(path)
            if kind.has_header:
                assert sorted(rows[0]) == sorted(kind.columns)
                body = rows[1:]
                width = len(rows[0])
            else:
                body = rows
                width = len(kind.columns)
            first_line = 2 if kind.has_header else 1
            wrong_width = {n for n, r in enumerate(body, start=first_line) if len(r) != width}
            source = f"{kind.folder}/{path.name}"
            assert wrong_width == {int(b[1]) for b in bad if b[0] == source and b[2] == "MALFORMED_ROW"}, source
    subscribers = _read(tmp_path / "reference" / "subscribers.csv")
    assert tuple(subscribers[0]) == SUBSCRIBER_COLUMNS
    expected = json.loads((tmp_path / "expected" / "summary.json").read_text())
    assert expected["bad_records"] == summary["bad_records"] > 0
    reasons = {row[2] for row in _read(tmp_path / "expected" / "bad_records.csv")[1:]}
    assert {"MALFORMED_ROW", "MISSING_FIELD", "BAD_TIMESTAMP", "NEGATIVE_USAGE", "UNKNOWN_SUBSCRIBER", "BAD_NUMBER"} <= reasons


def test_committed_default_tariff_is_the_generators_output(tmp_path):
    for written in write_default_plan(tmp_path):
        committed = PROJECT_ROOT / "rating_rules" / "default" / written.name
        assert committed.read_bytes() == written.read_bytes(), written.name


def test_no_record_opens_after_the_day_its_file_is_for(tmp_path):
    """Long calls and data sessions are split into parts; every part must open within its
    file's day, or the validator would rightly call it a future timestamp."""
    import pandas as pd
    from datetime import datetime, time, timedelta
    from zoneinfo import ZoneInfo

    generate(GeneratorSettings(out=tmp_path, seed=11, subscribers=60, start=date(2026, 11, 2), days=2,
                               events_per_day=3000))
    bad = {(r[0], int(r[1])) for r in _read(tmp_path / "expected" / "bad_records.csv")[1:]}
    checked = 0
    for folder, column in (("cdr/voice", "answer_time"), ("cdr/data", "record_opening_time")):
        for path in sorted((tmp_path / "landing" / folder).glob("*.csv*")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
            day = datetime.strptime(path.name.split("_")[1], "%Y%m%d").date()
            day_end = pd.Timestamp(datetime.combine(day + timedelta(days=1), time(), ZoneInfo("Europe/Berlin")))
            opened = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
            lines = frame.index + 2
            ok = [(f"{folder}/{path.name}", int(n)) in bad or pd.isna(t) or t < day_end for n, t in zip(lines, opened)]
            assert all(ok), path.name
            checked += len(frame)
    assert checked > 3000


def test_traffic_files_are_well_formed_except_the_planted_bad_one(tmp_path):
    from jobs.measurements import inspect_measurement_file

    _generate(tmp_path)
    files = sorted((tmp_path / "landing" / "traffic").glob("*.xml"))
    bad = {row[0] for row in _read(tmp_path / "expected" / "traffic_bad_files.csv")[1:]}
    assert len(files) == 2 * 24 * 3 - 1 + 1            # 2 days x 24 h x (MSC01, MSC02, PGW01), one missing, one bad
    for path in files:
        found = inspect_measurement_file(path.name, path.read_bytes())
        assert (found.reason_code is not None) == (f"traffic/{path.name}" in bad), path.name
    planted = _read(tmp_path / "expected" / "traffic_discrepancies.csv")[1:]
    assert {row[2] for row in planted} == {"mismatch", "missing_cdrs", "missing_counters"}
    assert any(row[3] == "True" for row in planted)     # the suspect counter


def test_a_call_across_local_midnight_is_counted_in_the_next_days_file(tmp_path):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import pandas as pd

    from jobs.generate.traffic import write_day

    berlin = ZoneInfo("Europe/Berlin")
    answer = int(datetime(2026, 11, 2, 23, 50, tzinfo=berlin).timestamp())
    calls = pd.DataFrame({"trunk": ["TG0101"], "answer": [answer], "duration": [1200]})   # 10 min each side
    no_data = pd.DataFrame({"apn": [], "opening": [], "uplink": [], "downlink": []})
    _, _, spill = write_day(tmp_path, date(2026, 11, 2), berlin, calls, no_data, plant=False)
    midnight = int(datetime(2026, 11, 3, tzinfo=berlin).timestamp())
    assert spill == {("TG0101", "CALL.OutConversationTime", midnight): 600}
    write_day(tmp_path, date(2026, 11, 3), berlin, calls.iloc[:0], no_data, plant=False, carried_in=spill)
    first_hour = (tmp_path / "A20261103.0000+0100-0100+0100_MSC01.xml").read_text()
    assert '<r p="2">600</r>' in first_hour and first_hour.count('<r p="2">600</r>') == 1
