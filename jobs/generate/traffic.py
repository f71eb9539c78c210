"""TS 32.435 measurement files that agree with the generated CDRs, except where told not to.

The counters model the traffic the day's valid CDRs describe (records the generator spoiled on
purpose are left out, so the quarantine and usage assurance never blame each other), counted the
way `jobs.assure` counts: answered outgoing calls by answer time, conversation seconds spread
over the 15-minute periods a call spans, data octets by session opening time. On the first
generated day it plants the discrepancies an assurance must find and writes them to
`expected/traffic_discrepancies.csv`; `expected/traffic_bad_files.csv` lists the unreadable file.

One file per network element and local hour with four 15-minute `measInfo` blocks, named per
TS 32.401 type A: `A20261102.1700+0100-1800+0100_MSC01.xml`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from schemas import reason_codes as R
from schemas.landing import (
    APN_LDN, COUNTER_METRICS, METRIC_ANSWERED_CALLS, METRIC_CONVERSATION_SECONDS, METRIC_DATA_OCTETS,
    PERIOD_SECONDS, TRUNK_LDN,
)

NAMESPACE = "http://www.3gpp.org/ftp/specs/archive/32_series/32.435#measCollec"
MSCS = ("MSC01", "MSC02")
TRUNKS_PER_MSC = 3
PGW = "PGW01"
APNS = ("internet", "ims", "iot.m2m")
CALL_COUNTERS = ("CALL.OutAnsweredCalls", "CALL.OutConversationTime")
DATA_COUNTERS = ("DATA.VolumeUplinkOctets", "DATA.VolumeDownlinkOctets")


def trunk_groups(msc: str) -> list[str]:
    return [f"TG{msc[-2:]}{k:02d}" for k in range(1, TRUNKS_PER_MSC + 1)]


def trunk_of(msc: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The outgoing trunk group of a call: trunk ids belong to one MSC, as counters name them."""
    return np.char.add(np.char.add("TG", np.char.replace(msc.astype(str), "MSC", "")),
                       np.char.zfill((slot % TRUNKS_PER_MSC + 1).astype(str), 2))


# The discrepancies planted on the first day (local hour, object, extra counter values).
LEAK_TRUNK, LEAK_HOURS, LEAK_CALLS, LEAK_SECONDS = "TG0102", (10, 11), 3, 420
UNMEDIATED_TRUNK, UNMEDIATED_HOUR, UNMEDIATED_CALLS, UNMEDIATED_SECONDS = "TG0199", 14, 5, 600
MISSING_FILE = ("MSC02", 9)
SUSPECT_TRUNK, SUSPECT_HOUR, SUSPECT_EXTRA_CALLS = "TG0201", 16, 7
DATA_LEAK_APN, DATA_LEAK_HOUR, DATA_LEAK_OCTETS = "ims", 20, 200 * 2**20


def spread_seconds(start: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(event index, period start epoch, seconds in that period) for each period an interval touches."""
    start, seconds = start.astype(np.int64), seconds.astype(np.int64)
    busy = seconds > 0
    first = start // PERIOD_SECONDS
    last = (start + seconds - 1) // PERIOD_SECONDS
    n = np.where(busy, last - first + 1, 0)
    idx = np.repeat(np.arange(len(start)), n)
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    period = (first[idx] + offset) * PERIOD_SECONDS
    within = np.minimum(start[idx] + seconds[idx], period + PERIOD_SECONDS) - np.maximum(start[idx], period)
    return idx, period, within


def voice_truth(calls: pd.DataFrame) -> pd.DataFrame:
    """calls: one row per answered outgoing call (trunk, answer epoch, duration) -> object, metric, period, value."""
    if calls.empty:
        return pd.DataFrame(columns=["object_id", "metric", "period", "value"])
    answers = pd.DataFrame({"object_id": calls["trunk"].to_numpy(),
                            "period": calls["answer"].to_numpy() // PERIOD_SECONDS * PERIOD_SECONDS, "value": 1})
    idx, period, within = spread_seconds(calls["answer"].to_numpy(), calls["duration"].to_numpy())
    seconds = pd.DataFrame({"object_id": calls["trunk"].to_numpy()[idx], "period": period, "value": within})
    counted = [answers.groupby(["object_id", "period"], as_index=False)["value"].sum().assign(metric=METRIC_ANSWERED_CALLS),
               seconds.groupby(["object_id", "period"], as_index=False)["value"].sum().assign(metric=METRIC_CONVERSATION_SECONDS)]
    return pd.concat(counted, ignore_index=True)


def data_truth(sessions: pd.DataFrame) -> pd.DataFrame:
    """sessions: apn, opening epoch, uplink, downlink -> object, metric (per direction), period, value."""
    period = sessions["opening"].to_numpy() // PERIOD_SECONDS * PERIOD_SECONDS
    frames = []
    for counter, column in zip(DATA_COUNTERS, ("uplink", "downlink")):
        frames.append(pd.DataFrame({"object_id": sessions["apn"].to_numpy(), "period": period,
                                    "value": sessions[column].to_numpy(), "metric": counter})
                      .groupby(["object_id", "period", "metric"], as_index=False)["value"].sum())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["object_id", "metric", "period", "value"])


@dataclass
class Plant:
    object_id: str
    counter: str
    period: int
    extra: int
    suspect: bool = False


def _local_hour_start(day: date, hour: int, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=tz).timestamp())


def _plants(day: date, tz: ZoneInfo) -> list[Plant]:
    plants = []
    for hour in LEAK_HOURS:
        for q in range(4):
            period = _local_hour_start(day, hour, tz) + q * PERIOD_SECONDS
            plants += [Plant(LEAK_TRUNK, CALL_COUNTERS[0], period, LEAK_CALLS),
                       Plant(LEAK_TRUNK, CALL_COUNTERS[1], period, LEAK_SECONDS)]
    for q in range(4):
        period = _local_hour_start(day, UNMEDIATED_HOUR, tz) + q * PERIOD_SECONDS
        plants += [Plant(UNMEDIATED_TRUNK, CALL_COUNTERS[0], period, UNMEDIATED_CALLS),
                   Plant(UNMEDIATED_TRUNK, CALL_COUNTERS[1], period, UNMEDIATED_SECONDS),
                   Plant(DATA_LEAK_APN, DATA_COUNTERS[1], _local_hour_start(day, DATA_LEAK_HOUR, tz) + q * PERIOD_SECONDS,
                         DATA_LEAK_OCTETS)]
    plants.append(Plant(SUSPECT_TRUNK, CALL_COUNTERS[0], _local_hour_start(day, SUSPECT_HOUR, tz), SUSPECT_EXTRA_CALLS,
                        suspect=True))
    return plants


def _by_metric(truth: pd.DataFrame) -> pd.DataFrame:
    """Counter rows -> the metrics assurance compares (uplink + downlink = data octets)."""
    frame = truth.assign(metric=truth["metric"].map(lambda m: COUNTER_METRICS.get(m, m)))
    return frame.groupby(["object_id", "metric", "period"], as_index=False)["value"].sum()


def expected_findings(truth: pd.DataFrame, plants: list[Plant], missing: list[tuple[str, int]]) -> pd.DataFrame:
    """The rows an assurance must flag, with the status its rules give them."""
    cdr = _by_metric(truth).set_index(["object_id", "metric", "period"])["value"]
    rows = []
    for p in plants:
        metric = COUNTER_METRICS[p.counter]
        billed = int(cdr.get((p.object_id, metric, p.period), 0))
        status = "mismatch" if billed else "missing_cdrs"
        rows.append((p.object_id, p.period, metric, status, p.suspect))
    for (object_id, metric, period), value in cdr.items():
        if (object_id, period) in missing and value > 0:
            rows.append((object_id, period, metric, "missing_counters", False))
    frame = pd.DataFrame(rows, columns=["object_id", "period", "metric", "status", "suspect"]).drop_duplicates()
    frame["period_start"] = pd.to_datetime(frame.pop("period"), unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame.sort_values(["period_start", "object_id", "metric"]).reset_index(drop=True)


def _offset(moment: datetime) -> str:
    return moment.strftime("%z")


def _iso(epoch: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch, tz).isoformat()


def measurement_file(element: str, objects: list[tuple[str, str]], counters: tuple[str, ...],
                     hour_start: int, values: dict, suspects: set, tz: ZoneInfo) -> tuple[str, str]:
    """(file name, XML text) for one element and hour; values[(object, counter, period)] -> int."""
    begin = datetime.fromtimestamp(hour_start, tz)
    end = datetime.fromtimestamp(hour_start + 4 * PERIOD_SECONDS, tz)
    name = f"A{begin:%Y%m%d.%H%M}{_offset(begin)}-{end:%H%M}{_offset(end)}_{element}.xml"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<measCollecFile xmlns="{NAMESPACE}">',
             f'  <fileHeader fileFormatVersion="32.435 V10.0" vendorName="cdr-billing-generator" dnPrefix="DC=operator.example">',
             f'    <fileSender localDn={quoteattr(element)}/>',
             f'    <measCollec beginTime="{begin.isoformat()}"/>',
             '  </fileHeader>', '  <measData>',
             f'    <managedElement localDn={quoteattr(element)}/>']
    for q in range(4):
        period = hour_start + q * PERIOD_SECONDS
        lines += [f'    <measInfo measInfoId="{counters[0].split(".")[0]}">',
                  f'      <granPeriod duration="PT900S" endTime="{_iso(period + PERIOD_SECONDS, tz)}"/>',
                  '      <repPeriod duration="PT900S"/>']
        lines += [f'      <measType p="{i}">{c}</measType>' for i, c in enumerate(counters, 1)]
        for object_id, ldn in objects:
            lines.append(f'      <measValue measObjLdn={quoteattr(ldn)}>')
            lines += [f'        <r p="{i}">{values.get((object_id, c, period), 0)}</r>' for i, c in enumerate(counters, 1)]
            if any((object_id, c, period) in suspects for c in counters):
                lines.append('        <suspect>true</suspect>')
            lines.append('      </measValue>')
        lines.append('    </measInfo>')
    lines += ['  </measData>', '  <fileFooter>', f'    <measCollec endTime="{end.isoformat()}"/>', '  </fileFooter>',
              '</measCollecFile>', '']
    return name, "\n".join(lines)


def write_day(folder: Path, day: date, tz: ZoneInfo, calls: pd.DataFrame, sessions: pd.DataFrame,
              plant: bool, carried_in: dict | None = None) -> tuple[pd.DataFrame, list, dict]:
    """Write one local day's measurement files.

    Returns (expected findings, bad files, carried_out): the seconds of calls that run past local
    midnight belong to the next day's files, so they are handed on (`carried_in` the next day)."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = pd.concat([voice_truth(calls).assign(metric=lambda f: f["metric"].map(
        {METRIC_ANSWERED_CALLS: CALL_COUNTERS[0], METRIC_CONVERSATION_SECONDS: CALL_COUNTERS[1]})),
        data_truth(sessions)], ignore_index=True)
    values = {(o, m, int(p)): int(v) for o, m, p, v in truth[["object_id", "metric", "period", "value"]].itertuples(index=False)}
    for key, value in (carried_in or {}).items():
        values[key] = values.get(key, 0) + value
    plants = _plants(day, tz) if plant else []
    for p in plants:
        values[(p.object_id, p.counter, p.period)] = values.get((p.object_id, p.counter, p.period), 0) + p.extra
    suspects = {(p.object_id, p.counter, p.period) for p in plants if p.suspect}
    missing_element, missing_hour = MISSING_FILE
    day_start = _local_hour_start(day, 0, tz)
    day_end = int(datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).timestamp())
    missing: list[tuple[str, int]] = []
    elements = [(msc, [(t, TRUNK_LDN.format(element=msc, object_id=t)) for t in trunk_groups(msc)]
                 + ([(UNMEDIATED_TRUNK, TRUNK_LDN.format(element=msc, object_id=UNMEDIATED_TRUNK))] if msc == "MSC01" else []),
                 CALL_COUNTERS) for msc in MSCS]
    elements.append((PGW, [(a, APN_LDN.format(element=PGW, object_id=a)) for a in APNS], DATA_COUNTERS))
    for hour_start in range(day_start, day_end, 4 * PERIOD_SECONDS):
        for element, objects, counters in elements:
            if plant and element == missing_element and hour_start == _local_hour_start(day, missing_hour, tz):
                missing += [(o, hour_start + q * PERIOD_SECONDS) for o, _ in objects for q in range(4)]
                continue
            name, text = measurement_file(element, objects, counters, hour_start, values, suspects, tz)
            (folder / name).write_text(text, encoding="utf-8")
    bad_files = []
    if plant:
        name, text = measurement_file("MSC03", [("TG0301", TRUNK_LDN.format(element="MSC03", object_id="TG0301"))],
                                      CALL_COUNTERS, _local_hour_start(day, 3, tz), {}, set(), tz)
        (folder / name).write_text(text[: len(text) // 2], encoding="utf-8")     # cut mid-element
        bad_files.append((f"traffic/{name}", R.BAD_XML))
    findings = expected_findings(truth, plants, missing) if plant else pd.DataFrame(
        columns=["object_id", "metric", "status", "suspect", "period_start"])
    carried_out = {key: value for key, value in values.items() if key[2] >= day_end}
    return findings, bad_files, carried_out
