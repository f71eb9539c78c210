"""Property: the Spark rating algebra agrees with a plain-Python reference rater that walks the
increments one by one in exact rational arithmetic (rating.md, "What it costs"), for calls across
time bands, rate groups, midnight, weekends and both DST changes in the operator's zone: first on
a fixed plan, then on random tariffs (rates, groups, increments, bands, weights, rounding)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.test_rating import rate, write_plan

pytestmark = pytest.mark.generated_code

TZ = ZoneInfo("Europe/Berlin")
# rate id -> groups (connect fee, rate, unit s, increment s, group start s)
RATES = {
    "RT_PEAK": [(Decimal("0.25"), Decimal("0.10"), 60, 30, 0), (Decimal("0"), Decimal("0.05"), 60, 6, 120)],
    "RT_OFF": [(Decimal("0.10"), Decimal("0.02"), 60, 1, 0)],
}
# destination rate -> (rate id, rounding method, decimals)
DESTINATION_RATES = {"DR_PEAK": ("RT_PEAK", "*up", 4), "DR_OFF": ("RT_OFF", "*middle", 2)}
ROUNDING = {"*up": ROUND_CEILING, "*middle": ROUND_HALF_UP, "*down": ROUND_FLOOR}


def plan(folder):
    return write_plan(
        folder, Destinations=["DST_DE,49"],
        Rates=["RT_PEAK,0.25,0.10,60s,30s,0s", "RT_PEAK,0,0.05,1m,6s,2m", "RT_OFF,0.10,0.02,60s,1s,0s"],
        DestinationRates=["DR_PEAK,DST_DE,RT_PEAK,*up,4,0,", "DR_OFF,DST_DE,RT_OFF,*middle,2,0,"],
        Timings=["T_OFF,*any,*any,*any,*any,00:00:00", "T_PEAK,*any,*any,*any,1;2;3;4;5,08:00:00",
                 "T_EVE,*any,*any,*any,1;2;3;4;5,18:00:00"],
        RatingPlans=["RP,DR_OFF,T_OFF,10", "RP,DR_PEAK,T_PEAK,20", "RP,DR_OFF,T_EVE,30"],
        RatingProfiles=["cgrates.org,call,S,,RP,"])


# the same plan as data for the reference rater: bands (tag, ISO weekdays, Time) and rows (DR, band, weight)
FIXED_PLAN = (RATES, DESTINATION_RATES,
              [("T_OFF", frozenset(range(1, 8)), 0), ("T_PEAK", frozenset(range(1, 6)), 8 * 3600),
               ("T_EVE", frozenset(range(1, 6)), 18 * 3600)],
              [("DR_OFF", "T_OFF", 10), ("DR_PEAK", "T_PEAK", 20), ("DR_OFF", "T_EVE", 30)])


ANCHORS = [datetime(2026, 3, 29, 0, 30), datetime(2026, 10, 25, 0, 30), datetime(2026, 11, 5, 6, 50),
           datetime(2026, 11, 6, 16, 45), datetime(2026, 11, 7, 22, 0), datetime(2026, 12, 31, 22, 40)]
calls = st.tuples(st.sampled_from(ANCHORS), st.integers(0, 6 * 3600), st.integers(0, 7200))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(calls, min_size=1, max_size=25))
def test_spark_rating_equals_the_reference_rater(spark, tmp_path_factory, batch):
    folder = plan(tmp_path_factory.mktemp("property"))
    events = [(anchor + timedelta(seconds=offset), usage) for anchor, offset, usage in batch]
    got = rate(spark, folder, [("call", "S", "4930123", start, usage) for start, usage in events])
    for i, (start, usage) in enumerate(events):
        reason, rounded, exact, _ = got[i]
        assert reason is None
        assert rounded == reference_cost_for(FIXED_PLAN, start, usage), (start, usage, exact)


# ---------------------------------------------------------------- random tariffs

def _money(places: int, high: int):
    return st.integers(0, high).map(lambda n: Decimal(n).scaleb(-places))


rate_groups = st.lists(st.tuples(_money(2, 50), _money(4, 2000), st.sampled_from([1, 60]), st.sampled_from([1, 6, 30, 60])),
                       min_size=1, max_size=3)
timings = st.lists(st.tuples(st.sets(st.integers(1, 7), min_size=1, max_size=7), st.integers(0, 23), st.sampled_from([0, 30])),
                   min_size=0, max_size=3)


@st.composite
def random_tariff(draw):
    """Two rates (1-3 groups each), their destination rates with random rounding, a base timing
    plus up to three weekday/time bands, plan rows with random weights."""
    rates = {}
    for tag in ("RT_A", "RT_B"):
        groups = draw(rate_groups)
        starts = sorted(draw(st.sets(st.sampled_from([60, 120, 300, 600]), min_size=len(groups) - 1, max_size=len(groups) - 1)))
        rates[tag] = [(fee, rate, unit, inc, start) for (fee, rate, unit, inc), start in zip(groups, [0] + starts)]
    drs = {"DR_A": ("RT_A", draw(st.sampled_from(list(ROUNDING))), draw(st.integers(2, 4))),
           "DR_B": ("RT_B", draw(st.sampled_from(list(ROUNDING))), draw(st.integers(2, 4)))}
    bands = [("T_BASE", frozenset(range(1, 8)), 0)] + [
        (f"T_{i}", frozenset(days), hour * 3600 + minute * 60) for i, (days, hour, minute) in enumerate(draw(timings))]
    rows = [(draw(st.sampled_from(list(drs))), tag, draw(st.integers(1, 4)) * 10) for tag, _, _ in bands]
    return rates, drs, bands, rows


def write_random_plan(folder, tariff):
    rates, drs, bands, rows = tariff
    return write_plan(
        folder, Destinations=["DST_DE,49"],
        Rates=[f"{tag},{fee},{rate},{unit}s,{inc}s,{start}s" for tag, groups in rates.items()
               for fee, rate, unit, inc, start in groups],
        DestinationRates=[f"{dr},DST_DE,{tag},{method},{decimals},0," for dr, (tag, method, decimals) in drs.items()],
        Timings=[f"{tag},*any,*any,*any,{';'.join(map(str, sorted(days)))},{t // 3600:02d}:{t % 3600 // 60:02d}:00"
                 for tag, days, t in bands],
        RatingPlans=[f"RP,{dr},{tag},{weight}" for dr, tag, weight in rows],
        RatingProfiles=["cgrates.org,call,S,,RP,"])


def reference_cost_for(tariff, start_utc: datetime, usage: int) -> Decimal:
    """rating.md read literally: increment by increment, the row in force at each increment's start."""
    rates, drs, bands, rows = tariff
    band_of = {tag: (days, t) for tag, days, t in bands}
    if usage == 0:
        return Decimal(0)
    total, consumed, used = Fraction(0), 0, []
    while consumed < usage:
        local = (start_utc + timedelta(seconds=consumed)).replace(tzinfo=timezone.utc).astimezone(TZ)
        tod = local.hour * 3600 + local.minute * 60 + local.second
        active = [(weight, band_of[tag][1], -order, dr) for order, (dr, tag, weight) in enumerate(rows)
                  if local.isoweekday() in band_of[tag][0] and band_of[tag][1] <= tod]
        dr = max(active)[3]
        if dr not in used:
            used.append(dr)
        fee, rate_value, unit, increment, _ = max((g for g in rates[drs[dr][0]] if g[4] <= consumed), key=lambda g: g[4])
        if consumed == 0:
            total += Fraction(fee)
        total += Fraction(increment, unit) * Fraction(rate_value)
        consumed += increment
    method, decimals = max((drs[d][1:] for d in used), key=lambda m: m[1])   # first on a tie
    twelve = (Decimal(total.numerator) / Decimal(total.denominator)).quantize(Decimal("1e-12"), ROUND_HALF_EVEN)
    return twelve.quantize(Decimal(1).scaleb(-decimals), ROUNDING[method])


WINDOW = [datetime(2026, 10, 22, 0, 0) + timedelta(hours=h) for h in range(0, 14 * 24, 5)]   # spans the DST change


# no shrinking: each step is a Spark job, and the message already shows the tariff and the calls
@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tariff=random_tariff(),
       batch=st.lists(st.tuples(st.sampled_from(WINDOW), st.integers(0, 5 * 3600), st.integers(0, 5400)),
                      min_size=400, max_size=700))
def test_spark_rating_equals_the_reference_rater_on_random_tariffs(spark, tmp_path_factory, tariff, batch):
    """Six random tariffs, 400-700 random calls each: thousands of (tariff, call) pairs."""
    folder = write_random_plan(tmp_path_factory.mktemp("random-plan"), tariff)
    events = [(anchor + timedelta(seconds=offset), usage) for anchor, offset, usage in batch]
    got = rate(spark, folder, [("call", "S", "4930123", start, usage) for start, usage in events])
    wrong = [(start, usage, got[i][1], reference_cost_for(tariff, start, usage)) for i, (start, usage) in enumerate(events)
             if got[i][0] is not None or got[i][1] != reference_cost_for(tariff, start, usage)]
    assert not wrong, (tariff, wrong[:5])
