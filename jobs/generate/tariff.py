"""Writes the default tariff plan (rating_rules/default) in the CGRateS format plus Plans,
Bundles and Taxes. The committed folder is this module's output; a test keeps them equal.

Zones: German fixed and mobile, short codes (free), EU and world international, SMS, home data,
roaming data by visited PLMN. Bands: weekday peak 08:00-18:00, off-peak evenings/nights,
weekends, and German public holidays (from the `holidays` package) at the weekend price.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import holidays

HOLIDAY_YEARS = (2026, 2027)

DESTINATIONS = {
    "DST_DE_FIXED": ["4930", "4940", "4969", "4989", "49201", "49211", "49221", "49228", "49341", "49351", "49511", "49711", "49911"],
    "DST_DE_MOBILE": ["49151", "49152", "49157", "49159", "49160", "49162", "49163", "49170", "49171", "49172",
                      "49173", "49174", "49175", "49176", "49177", "49178", "49179"],
    "DST_SHORT": ["110", "112", "115", "116", "11833", "22"],
    "DST_INTL_EU": ["31", "32", "33", "34", "351", "353", "358", "36", "39", "40", "41", "420", "43", "44", "45", "46", "47", "48"],
    "DST_INTL_WORLD": ["1", "7", "20", "27", "55", "61", "81", "86", "90", "91"],
    "DST_PLMN_EU": ["20801", "20810", "21407", "22210", "23415", "23410", "20404"],
    "DST_PLMN_WORLD": ["310260", "311480", "44010", "46000"],
}

# Id, ConnectFee, Rate, RateUnit, RateIncrement, GroupIntervalStart
RATES = [
    ("RT_NAT_PEAK", "0", "0.09", "60s", "60s", "0s"),
    ("RT_NAT_OFFPEAK", "0", "0.04", "60s", "30s", "0s"),
    ("RT_NAT_OFFPEAK", "0", "0.02", "60s", "6s", "30s"),
    ("RT_MOB_PEAK", "0.05", "0.19", "60s", "1s", "0s"),
    ("RT_MOB_OFFPEAK", "0", "0.09", "60s", "1s", "0s"),
    ("RT_WEEKEND", "0", "0.03", "60s", "60s", "0s"),
    ("RT_INTL_EU", "0.10", "0.29", "60s", "60s", "0s"),
    ("RT_INTL_EU", "0", "0.19", "60s", "60s", "600s"),
    ("RT_INTL_WORLD", "0.20", "1.49", "60s", "30s", "0s"),
    ("RT_INTL_WORLD", "0", "0.99", "60s", "6s", "30s"),
    ("RT_FREE", "0", "0", "60s", "60s", "0s"),
    ("RT_SMS_NAT", "0", "0.09", "1", "1", "0"),
    ("RT_SMS_INTL", "0", "0.19", "1", "1", "0"),
    ("RT_DATA_HOME", "0", "0.01", "1048576", "102400", "0"),
    ("RT_DATA_HOME", "0", "0.005", "1048576", "102400", "1073741824"),
    ("RT_ROAM_EU", "0", "0.002", "1048576", "102400", "0"),
    ("RT_ROAM_WORLD", "0.50", "4.99", "1048576", "10240", "0"),
    ("RT_PREM_NAT", "0", "0.05", "60s", "1s", "0s"),
]

# Id, DestinationId, RatesTag, RoundingMethod, RoundingDecimals, MaxCost, MaxCostStrategy
DESTINATION_RATES = [
    ("DR_NAT_PEAK", "DST_DE_FIXED", "RT_NAT_PEAK", "*up", "4", "0", ""),
    ("DR_NAT_OFFPEAK", "DST_DE_FIXED", "RT_NAT_OFFPEAK", "*up", "4", "0", ""),
    ("DR_MOB_PEAK", "DST_DE_MOBILE", "RT_MOB_PEAK", "*up", "4", "0", ""),
    ("DR_MOB_OFFPEAK", "DST_DE_MOBILE", "RT_MOB_OFFPEAK", "*up", "4", "0", ""),
    ("DR_WEEKEND_FIX", "DST_DE_FIXED", "RT_WEEKEND", "*middle", "4", "0", ""),
    ("DR_WEEKEND_MOB", "DST_DE_MOBILE", "RT_WEEKEND", "*middle", "4", "0", ""),
    ("DR_SHORT", "DST_SHORT", "RT_FREE", "*up", "2", "0", ""),
    ("DR_INTL", "DST_INTL_EU", "RT_INTL_EU", "*up", "4", "0", ""),
    ("DR_INTL", "DST_INTL_WORLD", "RT_INTL_WORLD", "*up", "4", "50", "*free"),
    ("DR_SMS", "DST_DE_FIXED", "RT_SMS_NAT", "*up", "4", "0", ""),
    ("DR_SMS", "DST_DE_MOBILE", "RT_SMS_NAT", "*up", "4", "0", ""),
    ("DR_SMS", "DST_SHORT", "RT_FREE", "*up", "4", "0", ""),
    ("DR_SMS", "DST_INTL_EU", "RT_SMS_INTL", "*up", "4", "0", ""),
    ("DR_SMS", "DST_INTL_WORLD", "RT_SMS_INTL", "*up", "4", "0", ""),
    ("DR_DATA_HOME", "*any", "RT_DATA_HOME", "*up", "4", "0", ""),
    ("DR_ROAMING", "DST_PLMN_EU", "RT_ROAM_EU", "*up", "4", "0", ""),
    ("DR_ROAMING", "DST_PLMN_WORLD", "RT_ROAM_WORLD", "*up", "4", "200", "*free"),
    ("DR_PREM_NAT", "DST_DE_FIXED", "RT_PREM_NAT", "*down", "4", "0", ""),
    ("DR_PREM_NAT", "DST_DE_MOBILE", "RT_PREM_NAT", "*down", "4", "0", ""),
]

WEEKDAYS, WEEKEND = "1;2;3;4;5", "6;7"
TIMINGS = [
    ("TM_WEEKDAY_NIGHT", "*any", "*any", "*any", WEEKDAYS, "00:00:00"),
    ("TM_WEEKDAY_PEAK", "*any", "*any", "*any", WEEKDAYS, "08:00:00"),
    ("TM_WEEKDAY_EVENING", "*any", "*any", "*any", WEEKDAYS, "18:00:00"),
    ("TM_WEEKEND", "*any", "*any", "*any", WEEKEND, "00:00:00"),
]


def holiday_timings() -> list[tuple[str, ...]]:
    rows = []
    for year in HOLIDAY_YEARS:
        for day in sorted(holidays.Germany(years=year)):
            rows.append((f"TM_HOLIDAY_{day:%Y%m%d}", str(day.year), str(day.month), str(day.day), "*any", "00:00:00"))
    return rows


def _band_rows(plan: str, weekday_peak: str, weekday_offpeak: str, weekend: str) -> list[tuple[str, ...]]:
    rows = [
        (plan, weekday_offpeak, "TM_WEEKDAY_NIGHT", "10"),
        (plan, weekday_peak, "TM_WEEKDAY_PEAK", "10"),
        (plan, weekday_offpeak, "TM_WEEKDAY_EVENING", "10"),
        (plan, weekend, "TM_WEEKEND", "20"),
    ]
    rows += [(plan, weekend, tag, "30") for tag, *_ in holiday_timings()]
    return rows


def rating_plans() -> list[tuple[str, ...]]:
    rows = []
    rows += _band_rows("RP_STANDARD", "DR_NAT_PEAK", "DR_NAT_OFFPEAK", "DR_WEEKEND_FIX")
    rows += _band_rows("RP_STANDARD", "DR_MOB_PEAK", "DR_MOB_OFFPEAK", "DR_WEEKEND_MOB")
    rows += [("RP_STANDARD", "DR_SHORT", "*any", "10"), ("RP_STANDARD", "DR_INTL", "*any", "10")]
    rows += [("RP_PREMIUM", "DR_PREM_NAT", "*any", "10")]   # the rest falls back to P_BASIC
    rows += [("RP_SMS", "DR_SMS", "*any", "10"), ("RP_DATA", "DR_DATA_HOME", "*any", "10"),
             ("RP_ROAMING", "DR_ROAMING", "*any", "10")]
    return rows


# Tenant, Category, Subject, ActivationTime, RatingPlanId, RatesFallbackSubject
RATING_PROFILES = [
    ("cgrates.org", "call", "P_BASIC", "2026-01-01T00:00:00", "RP_STANDARD", ""),
    ("cgrates.org", "call", "P_PREMIUM", "2026-01-01T00:00:00", "RP_PREMIUM", "P_BASIC"),
    ("cgrates.org", "call", "P_BIZ_CHF", "2026-01-01T00:00:00", "RP_STANDARD", ""),
    ("cgrates.org", "sms", "*any", "2026-01-01T00:00:00", "RP_SMS", ""),
    ("cgrates.org", "data", "*any", "2026-01-01T00:00:00", "RP_DATA", ""),
    ("cgrates.org", "data_roaming", "*any", "2026-01-01T00:00:00", "RP_ROAMING", ""),
]

PLANS = [("P_BASIC", "Basic mobile", "9.99", "EUR"), ("P_PREMIUM", "Premium unlimited-ish", "29.99", "EUR"),
         ("P_BIZ_CHF", "Business (Switzerland)", "39.90", "CHF")]
BUNDLES = [("P_PREMIUM", "B_PREM_DATA", "data", "*any", "5368709120"),
           ("P_PREMIUM", "B_PREM_SMS", "sms", "*any", "200"),
           ("P_BASIC", "B_BASIC_MIN", "call", "DST_DE_MOBILE", "3000")]
TAXES = [("DE", "*any", "VAT", "0.19"), ("DE", "call", "Telecom levy", "0.005"), ("CH", "*any", "MWST", "0.081")]

FILES = {
    "Destinations.csv": (("#Id", "Prefix"), lambda: [(d, p) for d, ps in DESTINATIONS.items() for p in ps]),
    "Rates.csv": (("#Id", "ConnectFee", "Rate", "RateUnit", "RateIncrement", "GroupIntervalStart"), lambda: RATES),
    "DestinationRates.csv": (("#Id", "DestinationId", "RatesTag", "RoundingMethod", "RoundingDecimals", "MaxCost",
                              "MaxCostStrategy"), lambda: DESTINATION_RATES),
    "Timings.csv": (("#Tag", "Years", "Months", "MonthDays", "WeekDays", "Time"), lambda: TIMINGS + holiday_timings()),
    "RatingPlans.csv": (("#Id", "DestinationRatesId", "TimingTag", "Weight"), rating_plans),
    "RatingProfiles.csv": (("#Tenant", "Category", "Subject", "ActivationTime", "RatingPlanId", "RatesFallbackSubject"),
                           lambda: RATING_PROFILES),
    "Plans.csv": (("#PlanId", "Description", "RecurringFee", "Currency"), lambda: PLANS),
    "Bundles.csv": (("#PlanId", "BundleId", "Category", "DestinationId", "Units"), lambda: BUNDLES),
    "Taxes.csv": (("#TaxRegion", "Category", "Name", "Rate"), lambda: TAXES),
}


def write_default_plan(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (header, rows) in FILES.items():
        path = folder / name
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows())
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_default_plan(Path(sys.argv[1] if len(sys.argv) > 1 else "rating_rules/default")):
        print(written_path)
