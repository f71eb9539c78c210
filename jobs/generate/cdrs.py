"""Sample landing data exactly in ../shared/spec/landing-formats.md, deterministic for a seed.

Vectorised with numpy so that millions of events take seconds. Besides the landing files it
writes `expected/` sidecars: the deliberately bad records with the reason the pipeline must give,
the deliberate duplicates, and the deliberate traffic-counter discrepancies, so that tests can
prove each one is caught.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from jobs.generate import traffic
from jobs.generate.traffic import trunk_of
from schemas import reason_codes as R
from schemas.landing import ASTERISK, DATA, SMS, SUBSCRIBER_COLUMNS, TRAFFIC_FOLDER, VOICE

HOURLY_PROFILE = np.array([2, 1, 1, 1, 1, 2, 4, 7, 9, 10, 10, 10, 9, 9, 9, 9, 10, 10, 9, 8, 7, 6, 4, 3], dtype=float)
WEEKEND_FACTOR = 0.7
PARTIAL_CHUNK_S = 1800          # an MSC closes a partial record every 30 minutes
DATA_PARTIAL_BYTES = 200 * 2**20
FOREIGN_PLMNS = np.array(["20801", "23415", "22210", "21407", "310260"])
BAD_SHARE = 0.01
DUPLICATE_SHARE = 0.003
LATE_SHARE = 0.005
PLANS = {"EUR": (["P_BASIC", "P_PREMIUM"], "DE"), "CHF": (["P_BIZ_CHF"], "CH")}


@dataclass(frozen=True)
class GeneratorSettings:
    out: Path
    seed: int = 42
    subscribers: int = 200
    start: date = date(2026, 11, 2)
    days: int = 3
    events_per_day: int = 2000
    timezone: str = "Europe/Berlin"
    home_country_code: str = "49"
    # a switch's mediation closes a file every few minutes or so many records: at least two a
    # day per kind, more when a day's records exceed this (a 10M-event day is ~100 files)
    records_per_file: int = 100_000


def _stamp(rng: np.random.Generator, epoch_s: np.ndarray) -> np.ndarray:
    """ISO 8601 with an offset: most `Z`, some `+01:00` (the same instant written differently)."""
    utc = np.datetime_as_string(epoch_s.astype("datetime64[s]"), unit="s")
    shifted = np.datetime_as_string((epoch_s + 3600).astype("datetime64[s]"), unit="s")
    plus_one = rng.random(len(epoch_s)) < 0.3
    return np.where(plus_one, np.char.add(shifted.astype(str), "+01:00"), np.char.add(utc.astype(str), "Z"))


def _digits(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return np.char.zfill(rng.integers(0, 10**width, n).astype(str), width)


def make_subscribers(s: GeneratorSettings, rng: np.random.Generator) -> pd.DataFrame:
    """Accounts with one to three numbers; a few numbers move between accounts mid-run, a few join."""
    n = s.subscribers
    msisdn = np.char.add("49151", np.char.zfill(np.arange(1_000_000, 1_000_000 + n).astype(str), 7))
    n_accounts = max(2, int(n * 0.7))
    account_idx = np.concatenate([np.arange(n_accounts), rng.integers(0, n_accounts, n - n_accounts)])[:n]
    chf = rng.random(n_accounts) < 0.1
    chf[0], chf[1] = False, True                      # both currencies always present
    # operators spread bill cycles over the month; every day of the generated run closes some
    cycle_days = rng.integers(1, 29, n_accounts)
    run_days = [(s.start + timedelta(days=d)).day for d in range(s.days) if (s.start + timedelta(days=d)).day <= 28]
    for slot, day in enumerate(run_days[: n_accounts // 2]):
        cycle_days[slot] = day
    plan_pick = rng.integers(0, 2, n)
    rows = []
    for i in range(n):
        a = account_idx[i]
        currency = "CHF" if chf[a] else "EUR"
        plans, region = PLANS[currency]
        rows.append({"account_id": f"ACC{a:06d}", "msisdn": msisdn[i], "imsi": f"26201{i:010d}",
                     "plan_id": plans[plan_pick[i] % len(plans)], "bill_cycle_day": int(cycle_days[a]),
                     "currency": currency, "tax_region": region, "valid_from": "2026-01-01", "valid_to": ""})
    frame = pd.DataFrame(rows, columns=list(SUBSCRIBER_COLUMNS))
    mover_day = (s.start + timedelta(days=max(1, s.days // 2))).isoformat()
    euro = frame.index[frame["currency"] == "EUR"]
    movers = euro[2: 2 + max(1, n // 50)]
    for i in movers:
        target = frame.loc[euro[(list(euro).index(i) + 7) % len(euro)]]
        frame.loc[i, "valid_to"] = mover_day
        moved = frame.loc[i].copy()
        moved[["account_id", "bill_cycle_day", "plan_id"]] = target[["account_id", "bill_cycle_day", "plan_id"]]
        moved["valid_from"], moved["valid_to"] = mover_day, ""
        frame = pd.concat([frame, moved.to_frame().T], ignore_index=True)
    joiners = euro[-max(1, n // 40):]
    frame.loc[joiners, "valid_from"] = (s.start + timedelta(days=1)).isoformat()
    return frame.sort_values(["msisdn", "valid_from"], kind="stable").reset_index(drop=True)


def _active_numbers(subs: pd.DataFrame, day: date) -> np.ndarray:
    iso = day.isoformat()
    nxt = (day + timedelta(days=1)).isoformat()
    ok = (subs["valid_from"] <= iso) & ((subs["valid_to"] == "") | (subs["valid_to"] >= nxt))
    return subs.loc[ok, "msisdn"].unique()


def _event_times(rng, day: date, n: int, tz: ZoneInfo) -> np.ndarray:
    """UTC epoch seconds following a diurnal profile in the operator's local time."""
    hours = rng.choice(24, n, p=HOURLY_PROFILE / HOURLY_PROFILE.sum())
    seconds = hours * 3600 + rng.integers(0, 3600, n)
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
    return np.sort(int(midnight.timestamp()) + seconds).astype(np.int64)


def _latest_start(day: date, tz: ZoneInfo, last_part_offset: np.ndarray) -> np.ndarray:
    """Latest start that lets every part of a call/session open within the day: a day's file
    cannot hold a record opened after the day (it would be a future timestamp, not a late one)."""
    day_end = int(datetime.combine(day + timedelta(days=1), time(), tz).timestamp())
    return day_end - last_part_offset - 60


def _dialled_numbers(rng, n: int, cc: str, numbers: np.ndarray) -> np.ndarray:
    """Numbers as subscribers dial them: E.164 with + or 00, national with 0, short codes."""
    kind = rng.choice(8, n, p=[0.25, 0.2, 0.15, 0.1, 0.1, 0.08, 0.07, 0.05])
    mob = np.char.add(rng.choice(["151", "160", "170", "176"], n), _digits(rng, n, 7))
    fixed = np.char.add(rng.choice(["30", "40", "89", "221"], n), _digits(rng, n, 7))
    intl_cc = rng.choice(["44", "33", "34", "39", "1", "90", "86", "48"], n)
    intl = np.char.add(intl_cc, _digits(rng, n, 9))
    on_net = rng.choice(numbers, n)
    out = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4, kind == 5, kind == 6],
        [np.char.add("0", mob), np.char.add("0", fixed), np.char.add("+", on_net), np.char.add("+" + cc, fixed),
         np.char.add("00", intl), np.char.add("+", intl), rng.choice(["112", "11833", "22", "116"], n)],
        np.char.add("00" + cc, mob),
    )
    return out


def _voice(rng, day, n, numbers, s: GeneratorSettings, tz, seq_base: int) -> pd.DataFrame:
    start = _event_times(rng, day, n, tz)
    record_type = rng.choice(["MOC", "MTC", "FWD"], n, p=[0.65, 0.3, 0.05])
    answered = rng.random(n) > 0.2
    duration = np.where(answered, np.minimum(np.rint(rng.lognormal(4.3, 1.1, n)), 7200), 0).astype(np.int64)
    long_calls = rng.random(n) < 0.02
    duration = np.where(long_calls & answered, rng.integers(1900, 5400, n), duration)
    n_parts = np.where(duration > PARTIAL_CHUNK_S, -(-duration // PARTIAL_CHUNK_S), 1)
    start = np.minimum(start, _latest_start(day, tz, (n_parts - 1) * PARTIAL_CHUNK_S))
    msc = rng.choice(["MSC01", "MSC02"], n)
    served = rng.choice(numbers, n)
    dialled = _dialled_numbers(rng, n, s.home_country_code, numbers)
    tkgp = trunk_of(msc, rng.integers(1, 7, n))
    rows = []
    ref = seq_base
    for i in range(n):
        ref += 1
        seizure = start[i] - int(rng.integers(2, 20))
        parts = int(n_parts[i])
        offset = 0
        for p in range(1, parts + 1):
            part_dur = min(PARTIAL_CHUNK_S, int(duration[i]) - offset) if parts > 1 else int(duration[i])
            rows.append((record_type[i], msc[i], f"{ref:012d}", str(p) if parts > 1 else "",
                         ("1" if p < parts else "0") if answered[i] else "3",
                         f"26201{served[i][-10:]}", served[i],
                         served[i] if record_type[i] != "MTC" else dialled[i],
                         dialled[i] if record_type[i] != "MTC" else served[i],
                         seizure + offset if p == 1 else start[i] + offset,
                         start[i] + offset if answered[i] else -1,
                         start[i] + offset + part_dur, part_dur, f"TGI{msc[i][-2:]}",
                         tkgp[i] if record_type[i] != "MTC" else "", f"2620101{int(rng.integers(1000, 9999))}",
                         i, parts, start[i] if answered[i] else -1, int(duration[i])))
            offset += part_dur
    frame = pd.DataFrame(rows, columns=[*VOICE.columns, "_event", "_parts", "_answer", "_total"])
    for col in ("seizure_time", "answer_time", "release_time"):
        epoch = frame[col].to_numpy()
        stamped = _stamp(rng, np.where(epoch < 0, 0, epoch))
        frame[col] = np.where(epoch < 0, "", stamped)
    frame["call_duration"] = frame["call_duration"].astype(str)
    return frame


def _sms(rng, day, n, numbers, s, tz, seq_base) -> pd.DataFrame:
    t = _event_times(rng, day, n, tz)
    return pd.DataFrame({
        "record_type": rng.choice(["MO_SMS", "MT_SMS"], n, p=[0.7, 0.3]),
        "smsc_id": rng.choice(["SMSC01", "SMSC02"], n),
        "message_reference": (seq_base + np.arange(n)).astype(str),
        "served_imsi": np.char.add("26201", _digits(rng, n, 10)),
        "served_msisdn": rng.choice(numbers, n),
        "destination_number": _dialled_numbers(rng, n, s.home_country_code, numbers),
        "origination_time": _stamp(rng, t),
        "sms_result": rng.choice(["", "0", "0", "0", "1", "27"], n, p=[0.3, 0.3, 0.2, 0.17, 0.02, 0.01]),
        "cell_id": np.char.add("2620101", _digits(rng, n, 4)),
        "_event": np.arange(n), "_parts": 1,
    })


def _data(rng, day, n, numbers, s, tz, seq_base) -> pd.DataFrame:
    t = _event_times(rng, day, n, tz)
    volume = np.minimum(np.rint(rng.lognormal(16.5, 1.6, n)), 4 * 2**30).astype(np.int64)
    roaming = rng.random(n) < 0.05
    plmn = np.where(roaming, rng.choice(FOREIGN_PLMNS, n), "26201")
    served = rng.choice(numbers, n)
    apn = rng.choice(["internet", "internet", "ims", "iot.m2m"], n)
    n_parts = np.minimum(4, 1 + volume // DATA_PARTIAL_BYTES)
    t = np.minimum(t, _latest_start(day, tz, (n_parts - 1) * 3600))
    rows = []
    for i in range(n):
        parts = int(n_parts[i])
        per = volume[i] // parts
        for p in range(1, parts + 1):
            vol = int(per if p < parts else volume[i] - per * (parts - 1))
            up = vol // 5
            rows.append(("PGW", f"10.20.0.{1 + i % 4}", str(seq_base + i), str(p),
                         ("17" if p < parts else "0"), f"26201{served[i][-10:]}", served[i], apn[i],
                         "NR" if i % 3 == 0 else "EUTRAN", plmn[i], int(t[i] + (p - 1) * 3600),
                         str(3600 if p < parts else int(rng.integers(5, 3600))), "10", str(up), str(vol - up), i, parts,
                         int(t[i]), up, vol - up))
    frame = pd.DataFrame(rows, columns=[*DATA.columns, "_event", "_parts", "_opening", "_up", "_down"])
    frame["record_opening_time"] = _stamp(rng, frame["record_opening_time"].to_numpy())
    return frame


def _asterisk(rng, day, n, numbers, s, tz, seq_base) -> pd.DataFrame:
    t = _event_times(rng, day, n, tz)
    local = pd.to_datetime(t, unit="s", utc=True).tz_convert(s.timezone).tz_localize(None)
    disposition = rng.choice(["ANSWERED", "NO ANSWER", "BUSY", "FAILED"], n, p=[0.75, 0.15, 0.07, 0.03])
    billsec = np.where(disposition == "ANSWERED", np.rint(rng.lognormal(4.0, 1.0, n)), 0).astype(np.int64)
    ring = rng.integers(1, 25, n)
    fmt = "%Y-%m-%d %H:%M:%S"
    answer = (local + pd.to_timedelta(ring, unit="s")).strftime(fmt)
    src = rng.choice(numbers, n)
    return pd.DataFrame({
        "accountcode": "", "src": src, "dst": _dialled_numbers(rng, n, s.home_country_code, numbers),
        "dcontext": "from-internal", "clid": np.char.add(np.char.add('"', src), '"'),
        "channel": np.char.add("PJSIP/", np.char.zfill((seq_base + np.arange(n)).astype(str), 8)),
        "dstchannel": "PJSIP/trunk", "lastapp": "Dial", "lastdata": "PJSIP/trunk",
        "start": local.strftime(fmt), "answer": np.where(disposition == "ANSWERED", answer, ""),
        "end": (local + pd.to_timedelta(ring + billsec, unit="s")).strftime(fmt),
        "duration": (ring + billsec).astype(str), "billsec": billsec.astype(str), "disposition": disposition,
        "amaflags": "DOCUMENTATION", "uniqueid": np.char.add(np.char.add(t.astype(str), "."), (seq_base + np.arange(n)).astype(str)),
        "userfield": "", "_event": np.arange(n), "_parts": 1,
    })


BAD_KINDS = {
    "voice": [(R.MALFORMED_ROW, None), (R.MISSING_FIELD, ("served_msisdn", "")), (R.BAD_TIMESTAMP, ("answer_time", "2026-13-45T25:61:00Z")),
              (R.FUTURE_TIMESTAMP, ("answer_time", "2099-01-01T10:00:00Z")), (R.NEGATIVE_USAGE, ("call_duration", "-42")),
              (R.USAGE_TOO_LARGE, ("call_duration", "9999999")), (R.BAD_NUMBER, ("called_number", "+49AB12C")),
              (R.UNKNOWN_SUBSCRIBER, ("served_msisdn", "49999000000"))],
    "sms": [(R.MALFORMED_ROW, None), (R.MISSING_FIELD, ("served_msisdn", "")), (R.BAD_TIMESTAMP, ("origination_time", "yesterday")),
            (R.FUTURE_TIMESTAMP, ("origination_time", "2099-01-01T10:00:00Z")), (R.BAD_NUMBER, ("destination_number", "0800-CALL-NOW")),
            (R.UNKNOWN_SUBSCRIBER, ("served_msisdn", "49999000001"))],
    "data": [(R.MALFORMED_ROW, None), (R.MISSING_FIELD, ("served_msisdn", "")), (R.BAD_TIMESTAMP, ("record_opening_time", "2026-02-30T10:00:00Z")),
             (R.NEGATIVE_USAGE, ("data_volume_downlink", "-1")), (R.USAGE_TOO_LARGE, ("data_volume_downlink", "99999999999999")),
             (R.UNKNOWN_SUBSCRIBER, ("served_msisdn", "49999000002"))],
    "asterisk": [(R.MALFORMED_ROW, None), (R.BAD_TIMESTAMP, ("start", "25/12/2026 10:00")),
                 (R.NEGATIVE_USAGE, ("billsec", "-7")), (R.UNKNOWN_SUBSCRIBER, ("src", "49999000003"))],
}


def _spoil(rng, frame: pd.DataFrame, kind_name: str) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Turn about 1% of single-record events into bad records, each kind of fault in turn."""
    singles = frame.index[frame["_parts"] == 1]
    chosen = rng.choice(singles, max(len(BAD_KINDS[kind_name]), int(len(singles) * BAD_SHARE)), replace=False)
    chosen = np.sort(chosen)
    kinds = BAD_KINDS[kind_name]
    frame["_malformed"] = False
    # one assignment per kind of fault: a .loc write per record copies the column each time
    # (quadratic: a 10M-event day took most of an hour here)
    for k, (_, change) in enumerate(kinds):
        rows = chosen[k::len(kinds)]
        if change is None:
            frame.loc[rows, "_malformed"] = True
        else:
            frame.loc[rows, change[0]] = change[1]
    faults = [(idx, kinds[j % len(kinds)][0]) for j, idx in enumerate(chosen)]
    return frame, faults


def _is_closing_part(frame: pd.DataFrame) -> np.ndarray:
    """True for single records and for the last part of a multi-part call or session."""
    parts = frame["_parts"].to_numpy()
    if "sequence_number" in frame:
        seq = frame["sequence_number"]
    elif "record_sequence_number" in frame:
        seq = frame["record_sequence_number"]
    else:
        return np.ones(len(frame), bool)
    return (parts == 1) | (seq.replace("", "1").astype(int).to_numpy() == parts)


def _csv_text(frame: pd.DataFrame, columns: list[str], header: bool) -> str:
    buffer = io.StringIO()
    body = frame[columns]
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    malformed = frame["_malformed"].to_numpy() if "_malformed" in frame else np.zeros(len(frame), bool)
    for values, bad in zip(body.itertuples(index=False, name=None), malformed):
        writer.writerow(values[:-1] if bad else values)
    return buffer.getvalue()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        with path.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)


KINDS = {
    "voice": (VOICE, _voice, 0.45, "MSC", ".csv"),
    "sms": (SMS, _sms, 0.25, "SMSC", ".csv"),
    "data": (DATA, _data, 0.25, "PGW", ".csv.gz"),
    "asterisk": (ASTERISK, _asterisk, 0.05, "Master", ".csv"),
}


def _file_name(prefix: str, day: date, part: str, suffix: str) -> str:
    return f"{prefix}_{day:%Y%m%d}_{part}{suffix}"


def _carried_calls(frame: pd.DataFrame, faulty: np.ndarray) -> pd.DataFrame:
    """Answered outgoing calls the valid CDRs describe, one row per call (for the traffic counters)."""
    first = frame[~faulty & frame["sequence_number"].isin(["", "1"])]
    calls = first[first["record_type"].isin(["MOC", "FWD"]) & (first["_answer"] >= 0) & (first["msc_outgoing_tkgp"] != "")]
    return pd.DataFrame({"trunk": calls["msc_outgoing_tkgp"].to_numpy(), "answer": calls["_answer"].to_numpy(np.int64),
                         "duration": calls["_total"].to_numpy(np.int64)})


def _carried_sessions(frame: pd.DataFrame, faulty: np.ndarray) -> pd.DataFrame:
    valid = frame[~faulty]
    return (valid.groupby("_event", sort=True)
            .agg(apn=("apn", "first"), opening=("_opening", "first"), uplink=("_up", "sum"), downlink=("_down", "sum"))
            .reset_index(drop=True))


def generate(s: GeneratorSettings) -> dict:
    """Write landing/, reference/ and expected/ under s.out; return counts."""
    rng = np.random.default_rng(s.seed)
    tz = ZoneInfo(s.timezone)
    landing, reference, expected = s.out / "landing", s.out / "reference", s.out / "expected"
    subs = make_subscribers(s, rng)
    reference.mkdir(parents=True, exist_ok=True)
    subs.to_csv(reference / "subscribers.csv", index=False, lineterminator="\n")
    faults_out, carry, expected_duplicates = [], {k: None for k in KINDS}, 0
    counts = {k: 0 for k in KINDS}
    findings, bad_files, past_midnight = [], [], {}
    for d in range(s.days):
        day = s.start + timedelta(days=d)
        numbers = _active_numbers(subs, day)
        volume = s.events_per_day * (WEEKEND_FACTOR if day.weekday() >= 5 else 1.0)
        carried: dict[str, pd.DataFrame] = {}
        for name, (kind, make, share, prefix, suffix) in KINDS.items():
            n = max(20, int(volume * share))
            frame = make(rng, day, n, numbers, s, tz, seq_base=(d + 1) * 10_000_000)
            frame, faults = _spoil(rng, frame, name)
            if name in ("voice", "data"):
                carried[name] = (_carried_calls if name == "voice" else _carried_sessions)(
                    frame, frame.index.isin([i for i, _ in faults]))
            if carry[name] is not None:                    # yesterday's late records and duplicates
                faults = [(i + len(carry[name]), reason) for i, reason in faults]
                frame = pd.concat([carry[name], frame], ignore_index=True)
            faulty = frame.index.isin([i for i, _ in faults])
            late = rng.random(len(frame)) < LATE_SHARE
            # single records, or the closing part of a long call/session (completed a day later)
            late &= (frame["_parts"].to_numpy() == 1) | (rng.random(len(frame)) < 0.5)
            late &= ~faulty
            late &= _is_closing_part(frame)
            dup_idx = rng.choice(frame.index[~late & ~faulty], max(1, int(len(frame) * DUPLICATE_SHARE)), replace=False)
            carry[name] = pd.concat([frame[late], frame.loc[dup_idx]], ignore_index=True) if d < s.days - 1 else None
            if carry[name] is not None:
                expected_duplicates += len(dup_idx)
            today = frame[~late] if d < s.days - 1 else frame
            if name == "sms":                              # column order differs between files
                columns = [c for c in kind.columns if c != "smsc_id"] + ["smsc_id"]
            else:
                columns = list(kind.columns)
            n_files = max(2, -(-len(today) // s.records_per_file))
            for h, rows in enumerate(np.array_split(np.arange(len(today)), n_files)):
                part = today.iloc[rows]
                file_name = _file_name(prefix, day, f"{h + 1:03d}", suffix)
                path = landing / kind.folder / file_name
                _write(path, _csv_text(part, columns, header=kind.has_header))
                first_line = 2 if kind.has_header else 1
                positions = {idx: first_line + k for k, idx in enumerate(part.index)}
                source = f"{kind.folder}/{file_name}"
                faults_out += [(source, positions[i], reason) for i, reason in faults if i in positions]
                counts[name] += len(part)
        day_findings, day_bad, past_midnight = traffic.write_day(
            landing / TRAFFIC_FOLDER, day, tz, carried["voice"], carried["data"], plant=(d == 0), carried_in=past_midnight)
        findings.append(day_findings)
        bad_files += day_bad
    expected.mkdir(parents=True, exist_ok=True)
    pd.concat(findings, ignore_index=True).to_csv(expected / "traffic_discrepancies.csv", index=False, lineterminator="\n")
    pd.DataFrame(bad_files, columns=["source_file", "reason_code"]).to_csv(
        expected / "traffic_bad_files.csv", index=False, lineterminator="\n")
    pd.DataFrame(faults_out, columns=["source_file", "line_number", "reason_code"]).to_csv(
        expected / "bad_records.csv", index=False, lineterminator="\n")
    summary = {"subscribers": len(subs), "records": counts, "bad_records": len(faults_out),
               "traffic_files": len(list((landing / TRAFFIC_FOLDER).glob("*.xml"))),
               "traffic_discrepancies": int(sum(len(f) for f in findings)),
               "duplicates": expected_duplicates, "seed": s.seed}
    (expected / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
