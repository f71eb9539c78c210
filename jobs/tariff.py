"""Tariff loading: a CGRateS tariff-plan folder (plus Plans/Bundles/Taxes) -> a validated Tariff.

Pure Python over small files (a plan's prefixes are loaded column-wise, with no per-prefix
Python work beyond reading the CSV). Every error names file, line and field; an invalid plan
raises TariffError before anything is rated. `compile_*` turn the tariff into the small,
broadcastable reference rows the rating algebra joins against (jobs/rating.py).
"""
from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

CGRATES_FILES = ("Destinations", "Rates", "DestinationRates", "Timings", "RatingPlans", "RatingProfiles")
BILLING_FILES = ("Plans", "Bundles", "Taxes")
REQUIRED_FILES = ("Destinations", "Rates", "DestinationRates", "RatingPlans", "RatingProfiles")
COLUMNS = {
    "Destinations": 2, "Rates": 6, "DestinationRates": 7, "Timings": 6, "RatingPlans": 4, "RatingProfiles": 6,
    "Plans": 4, "Bundles": 5, "Taxes": 4,
}
MIN_COLUMNS = {"DestinationRates": 5, "RatingPlans": 3, "RatingProfiles": 5}
BUILTIN_TIMINGS = ("*any", "*asap")
ROUNDING_METHODS = ("*up", "*middle", "*down")
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_NANOS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1}


class TariffError(ValueError):
    """An invalid tariff plan; `errors` lists every problem found, each naming file:line field."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid tariff plan: {errors[0]}{more}")


@dataclass(frozen=True)
class Quantity:
    """A RateUnit / RateIncrement / GroupIntervalStart as written: seconds for voice, units otherwise."""
    seconds: Decimal      # plain number -> seconds; Go duration -> its seconds
    units: int            # plain number -> units (bytes, messages); Go duration -> nanoseconds


def parse_quantity(text: str) -> Quantity:
    value = text.strip()
    if re.fullmatch(r"\d+", value):
        return Quantity(Decimal(value), int(value))
    if not _GO_DURATION.fullmatch(value):
        raise ValueError(f"not a duration or number: {text!r}")
    nanos = sum(Decimal(n) * _NANOS[u] for n, u in _GO_PART.findall(value))
    if nanos != nanos.to_integral_value():
        raise ValueError(f"duration finer than a nanosecond: {text!r}")
    return Quantity(nanos / 10**9, int(nanos))


@dataclass(frozen=True)
class RateGroup:
    rate_id: str
    connect_fee: Decimal
    rate: Decimal
    unit: Quantity
    increment: Quantity
    group_start: Quantity


@dataclass(frozen=True)
class DestinationRate:
    dr_id: str
    destination_id: str
    rates_tag: str
    rounding_method: str
    rounding_decimals: int
    max_cost: Decimal
    max_cost_strategy: str


@dataclass(frozen=True)
class Timing:
    tag: str
    years: tuple[int, ...]
    months: tuple[int, ...]
    month_days: tuple[int, ...]
    week_days: tuple[int, ...]      # 1=Mon .. 7=Sun (0 is read as 7)
    time_s: int


@dataclass(frozen=True)
class PlanRow:
    rp_id: str
    dr_id: str
    timing_tag: str
    weight: float
    order: int


@dataclass(frozen=True)
class Profile:
    tenant: str
    category: str
    subject: str
    activation: datetime           # UTC; datetime.min (UTC) when empty
    rp_id: str
    fallbacks: tuple[str, ...]


@dataclass
class Tariff:
    folder: str
    version: str
    destinations: dict[str, list[str]]
    rates: dict[str, list[RateGroup]]
    destination_rates: dict[str, list[DestinationRate]]
    timings: dict[str, Timing]
    rating_plans: dict[str, list[PlanRow]]
    profiles: list[Profile]
    plans: list[dict] = field(default_factory=list)
    bundles: list[dict] = field(default_factory=list)
    taxes: list[dict] = field(default_factory=list)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.csv", folder / f"{stem}.CSV"):
        if candidate.is_file():
            return candidate
    return None


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the data rows: comments (#...), headers and blank lines skipped."""
    out = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for line_no, fields in enumerate(csv.reader(handle), start=1):
            if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
                continue
            out.append((line_no, [f.strip() for f in fields]))
    return out


def _int_list(text: str, low: int, high: int) -> tuple[int, ...]:
    if text in ("", "*any"):
        return ()
    values = tuple(int(v) for v in text.split(";") if v.strip())
    if any(v < low or v > high for v in values):
        raise ValueError(f"values outside {low}..{high}: {text!r}")
    return values


def _time_of_day(text: str) -> int:
    if text in ("", "*any", "*asap"):
        return 0
    hours, minutes, seconds = (int(x) for x in text.split(":"))
    if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= seconds < 60):
        raise ValueError(f"not a time of day: {text!r}")
    return hours * 3600 + minutes * 60 + seconds


def _activation(text: str, tz: ZoneInfo) -> datetime:
    if not text:
        return datetime.min.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(timezone.utc)


def _money(text: str) -> Decimal:
    value = Decimal(text or "0")
    if not value.is_finite():
        raise InvalidOperation(text)
    return value


def content_version(folder: Path) -> str:
    digest = hashlib.sha256()
    for stem in CGRATES_FILES + BILLING_FILES:
        path = _find(folder, stem)
        if path is not None:
            digest.update(stem.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def load_tariff(folder: str | Path, timezone_name: str) -> Tariff:
    """Load and validate; raise TariffError listing every problem (file:line field: what)."""
    folder = Path(folder)
    tz = ZoneInfo(timezone_name)
    errors: list[str] = []
    if not folder.is_dir():
        raise TariffError([f"{folder}: no such tariff plan folder"])
    raw = {}
    for stem in CGRATES_FILES + BILLING_FILES:
        path = _find(folder, stem)
        if path is None:
            if stem in REQUIRED_FILES:
                errors.append(f"{stem}.csv: required file missing")
            raw[stem] = []
            continue
        rows = _rows(path)
        for line_no, fields in rows:
            if len(fields) < MIN_COLUMNS.get(stem, COLUMNS[stem]):
                errors.append(f"{stem}.csv:{line_no}: expected {COLUMNS[stem]} fields, got {len(fields)}")
        raw[stem] = [(n, f + [""] * (COLUMNS[stem] - len(f))) for n, f in rows
                     if len(f) >= MIN_COLUMNS.get(stem, COLUMNS[stem])]

    def field_error(stem, line_no, name, exc):
        errors.append(f"{stem}.csv:{line_no} {name}: {exc}")

    destinations: dict[str, list[str]] = defaultdict(list)
    seen_prefix = set()
    for line_no, (dest_id, prefix, *_) in raw["Destinations"]:
        prefix = prefix.lstrip("+")
        if not dest_id or not re.fullmatch(r"[0-9A-Za-z*#]+", prefix or "-"):
            field_error("Destinations", line_no, "Prefix", f"not a prefix: {prefix!r}")
        elif (dest_id, prefix) in seen_prefix:
            field_error("Destinations", line_no, "Prefix", f"duplicate prefix {prefix} in {dest_id}")
        else:
            seen_prefix.add((dest_id, prefix))
            destinations[dest_id].append(prefix)

    rates: dict[str, list[RateGroup]] = defaultdict(list)
    for line_no, (rate_id, fee, rate, unit, inc, gis, *_) in raw["Rates"]:
        try:
            unit_q, inc_q = parse_quantity(unit or "0"), parse_quantity(inc or "0")
            one = Quantity(Decimal(1), 1)
            group = RateGroup(rate_id, _money(fee), _money(rate),
                              unit_q if unit_q.units else one, inc_q if inc_q.units else one, parse_quantity(gis or "0"))
            if group.rate < 0 or group.connect_fee < 0:
                raise ValueError("negative price")
            if any(g.group_start == group.group_start for g in rates[rate_id]):
                raise ValueError(f"duplicate GroupIntervalStart {gis} for {rate_id}")
            rates[rate_id].append(group)
        except (ValueError, InvalidOperation) as exc:
            field_error("Rates", line_no, "Rate/RateUnit/RateIncrement/GroupIntervalStart", exc)
    for groups in rates.values():
        groups.sort(key=lambda g: g.group_start.units)

    destination_rates: dict[str, list[DestinationRate]] = defaultdict(list)
    for line_no, (dr_id, dest_id, tag, method, decimals, max_cost, strategy, *_) in raw["DestinationRates"]:
        try:
            if dest_id != "*any" and dest_id not in destinations:
                raise ValueError(f"unknown DestinationId {dest_id!r}")
            if tag not in rates:
                raise ValueError(f"unknown RatesTag {tag!r}")
            method = method or "*middle"
            if method not in ROUNDING_METHODS:
                raise ValueError(f"RoundingMethod {method!r} is not one of {', '.join(ROUNDING_METHODS)}")
            cap = _money(max_cost)
            if cap > 0 and strategy not in ("*free", "*disconnect"):
                raise ValueError(f"MaxCostStrategy {strategy!r} is not *free or *disconnect")
            if any(d.destination_id == dest_id for d in destination_rates[dr_id]):
                raise ValueError(f"duplicate destination {dest_id} in {dr_id}")
            destination_rates[dr_id].append(DestinationRate(dr_id, dest_id, tag, method, int(decimals or 4), cap, strategy))
        except (ValueError, InvalidOperation) as exc:
            field_error("DestinationRates", line_no, "DestinationId/RatesTag/Rounding/MaxCost", exc)

    timings = {tag: Timing(tag, (), (), (), (), 0) for tag in BUILTIN_TIMINGS}
    for line_no, (tag, years, months, days, weekdays, time_text, *_) in raw["Timings"]:
        try:
            if tag in timings and tag not in BUILTIN_TIMINGS:
                raise ValueError(f"duplicate timing tag {tag}")
            week = tuple(7 if d == 0 else d for d in _int_list(weekdays, 0, 7))
            timings[tag] = Timing(tag, _int_list(years, 1, 9999), _int_list(months, 1, 12), _int_list(days, 1, 31),
                                  week, _time_of_day(time_text))
        except ValueError as exc:
            field_error("Timings", line_no, "Years/Months/MonthDays/WeekDays/Time", exc)

    rating_plans: dict[str, list[PlanRow]] = defaultdict(list)
    for order, (line_no, (rp_id, dr_id, timing_tag, weight, *_)) in enumerate(raw["RatingPlans"]):
        try:
            if dr_id not in destination_rates:
                raise ValueError(f"unknown DestinationRatesId {dr_id!r}")
            if (timing_tag or "*any") not in timings:
                raise ValueError(f"unknown TimingTag {timing_tag!r}")
            row = PlanRow(rp_id, dr_id, timing_tag or "*any", float(weight or 0), order)
            if any(r.dr_id == row.dr_id and r.timing_tag == row.timing_tag for r in rating_plans[rp_id]):
                raise ValueError(f"duplicate row {dr_id}/{timing_tag} in {rp_id}")
            rating_plans[rp_id].append(row)
        except ValueError as exc:
            field_error("RatingPlans", line_no, "DestinationRatesId/TimingTag/Weight", exc)

    profiles = []
    seen_profiles = set()
    for line_no, (tenant, category, subject, activation, rp_id, fallback, *_) in raw["RatingProfiles"]:
        try:
            if rp_id not in rating_plans:
                raise ValueError(f"unknown RatingPlanId {rp_id!r}")
            key = (tenant, category, subject, activation)
            if key in seen_profiles:
                raise ValueError(f"duplicate profile {tenant}/{category}/{subject} at {activation or 'always'}")
            seen_profiles.add(key)
            profiles.append(Profile(tenant, category, subject, _activation(activation, tz), rp_id,
                                    tuple(f for f in fallback.split(";") if f)))
        except ValueError as exc:
            field_error("RatingProfiles", line_no, "RatingPlanId/ActivationTime", exc)

    plans = []
    for line_no, (plan_id, description, fee, currency, *_) in raw["Plans"]:
        try:
            plans.append({"plan_id": plan_id, "description": description, "recurring_fee": _money(fee),
                          "currency": currency.upper()})
        except InvalidOperation:
            field_error("Plans", line_no, "RecurringFee", f"not a number: {fee!r}")
    bundles = []
    for line_no, (plan_id, bundle_id, category, dest_id, units, *_) in raw["Bundles"]:
        if not units.isdigit():
            field_error("Bundles", line_no, "Units", f"not a whole number: {units!r}")
        else:
            bundles.append({"plan_id": plan_id, "bundle_id": bundle_id, "category": category,
                            "destination_id": dest_id or "*any", "units": int(units)})
    taxes = []
    for line_no, (region, category, name, rate, *_) in raw["Taxes"]:
        try:
            taxes.append({"tax_region": region, "category": category, "name": name, "rate": _money(rate)})
        except InvalidOperation:
            field_error("Taxes", line_no, "Rate", f"not a number: {rate!r}")

    if errors:
        raise TariffError(errors)
    return Tariff(str(folder), content_version(folder), dict(destinations), dict(rates), dict(destination_rates),
                  timings, dict(rating_plans), profiles, plans, bundles, taxes)
