from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from jobs.rating import CompiledTariff, rate_events
from jobs.tariff import load_tariff
from tests.conftest import CGRATES_SAMPLES

pytestmark = pytest.mark.generated_code

BERLIN = ZoneInfo("Europe/Berlin")
HEADERS = {
    "Destinations": "#Id,Prefix", "Rates": "#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart",
    "DestinationRates": "#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy",
    "Timings": "#Tag,Years,Months,MonthDays,WeekDays,Time", "RatingPlans": "#Id,DestinationRatesId,TimingTag,Weight",
    "RatingProfiles": "#Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject",
    "Plans": "#PlanId,Description,RecurringFee,Currency", "Bundles": "#PlanId,BundleId,Category,DestinationId,Units",
    "Taxes": "#TaxRegion,Category,Name,Rate",
}


def write_plan(folder, **files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / f"{name}.csv").write_text(HEADERS[name] + "\n" + "\n".join(body) + "\n")
    return folder


def utc(*args, tz=BERLIN):
    return datetime(*args, tzinfo=tz).astimezone(timezone.utc).replace(tzinfo=None)


def event_frame(spark, events):
    """(category, plan_id, destination, event_start, usage) tuples as events e0, e1, …"""
    return spark.createDataFrame(
        [(f"e{i}", *e) for i, e in enumerate(events)],
        "event_id string, category string, plan_id string, destination string, event_start timestamp, usage long")


def rate(spark, folder, events, tz="Europe/Berlin", tenant="cgrates.org"):
    compiled = CompiledTariff(spark, load_tariff(folder, tz), tenant)
    out = rate_events(event_frame(spark, events), compiled, tz).collect()
    return {int(r.event_id[1:]): (r.rating_reason, r.cost_rounded, r.cost_exact, r.destination_id) for r in out}


def cost(result):
    assert result[0] is None, result
    return result[1]


# ---------------------------------------------------------------- the spec's worked examples

@pytest.mark.skipif(not CGRATES_SAMPLES.exists(), reason="../shared/data not beside the checkout")
def test_rt_20cnt_worked_examples_on_the_cgrates_tutorial_plan(spark):
    at = datetime(2026, 11, 5, 10, 0, 0)
    got = rate(spark, CGRATES_SAMPLES / "tutorial", [("call", "1001", "1002", at, 90), ("call", "1001", "1002", at, 10),
                                                      ("call", "1001", "1002", at, 0)], tz="UTC")
    assert cost(got[0]) == Decimal("0.65") and cost(got[1]) == Decimal("0.60") and cost(got[2]) == 0


@pytest.mark.skipif(not CGRATES_SAMPLES.exists(), reason="../shared/data not beside the checkout")
def test_the_old_tutorial_plan_loads_and_rates(spark):
    got = rate(spark, CGRATES_SAMPLES / "oldtutorial", [("call", "1001", "1002", datetime(2026, 11, 5, 10, 0), 120)], tz="UTC")
    assert got[0][0] is None and got[0][1] > 0


def band_plan(tmp_path, **extra):
    files = dict(
        Destinations=["DST_ALL,49"],
        Rates=["RT_DAY,1,1,1s,1s,0s", "RT_EVE,0,0.5,1s,1s,0s"],
        DestinationRates=["DR_DAY,DST_ALL,RT_DAY,*up,4,0,", "DR_EVE,DST_ALL,RT_EVE,*up,4,0,"],
        Timings=["DAY,*any,*any,*any,1;2;3;4;5;6;7,00:00:00", "EVE,*any,*any,*any,1;2;3;4;5;6;7,18:00:00"],
        RatingPlans=["RP,DR_DAY,DAY,10", "RP,DR_EVE,EVE,10"],
        RatingProfiles=["cgrates.org,call,S,,RP,"],
    )
    files.update(extra)
    return write_plan(tmp_path / "plan", **files)


def test_thursday_call_across_a_band_boundary_costs_2701(spark, tmp_path):
    got = rate(spark, band_plan(tmp_path), [("call", "S", "4930", utc(2026, 11, 5, 17, 30), 3600)])
    assert cost(got[0]) == Decimal("2701")


def test_call_across_midnight_into_the_weekend(spark, tmp_path):
    plan = band_plan(tmp_path, Rates=["RT_WD,0,1,1s,1s,0s", "RT_WE,0,0.1,1s,1s,0s"],
                     DestinationRates=["DR_WD,DST_ALL,RT_WD,*up,4,0,", "DR_WE,DST_ALL,RT_WE,*up,4,0,"],
                     Timings=["WD,*any,*any,*any,1;2;3;4;5,00:00:00", "WE,*any,*any,*any,6;7,00:00:00"],
                     RatingPlans=["RP,DR_WD,WD,10", "RP,DR_WE,WE,10"])
    friday_late = utc(2026, 11, 6, 23, 59)
    assert cost(rate(spark, plan, [("call", "S", "4930", friday_late, 120)])[0]) == Decimal("66")


def test_bands_follow_the_local_clock_across_a_dst_change(spark, tmp_path):
    plan = band_plan(tmp_path, Timings=["DAY,*any,*any,*any,*any,00:00:00", "EVE,*any,*any,*any,*any,08:00:00"])
    # 07:50 local on a summer-time day and on a winter-time day: the band changes 10 minutes in, both times
    summer = rate(spark, plan, [("call", "S", "4930", utc(2026, 10, 23, 7, 50), 1200)])
    winter = rate(spark, plan, [("call", "S", "4930", utc(2026, 10, 26, 7, 50), 1200)])
    assert cost(summer[0]) == cost(winter[0]) == Decimal("1") + 600 + Decimal("300")


def test_holiday_timing_overrides_weekday_weights(spark, tmp_path):
    plan = band_plan(tmp_path, Rates=["RT_WD,0,1,60s,60s,0s", "RT_HOL,0,0.01,60s,60s,0s"],
                     DestinationRates=["DR_WD,DST_ALL,RT_WD,*up,4,0,", "DR_HOL,DST_ALL,RT_HOL,*up,4,0,"],
                     Timings=["WD,*any,*any,*any,1;2;3;4;5,00:00:00", "XMAS,2026,12,25,*any,00:00:00"],
                     RatingPlans=["RP,DR_WD,WD,10", "RP,DR_HOL,XMAS,30"])
    got = rate(spark, plan, [("call", "S", "4930", utc(2026, 12, 25, 11, 0), 60), ("call", "S", "4930", utc(2026, 12, 24, 11, 0), 60)])
    assert cost(got[0]) == Decimal("0.01") and cost(got[1]) == Decimal("1")


def test_activation_time_inside_a_call_splits_it(spark, tmp_path):
    plan = band_plan(tmp_path, Rates=["RT_OLD,0,1,1s,1s,0s", "RT_NEW,0,2,1s,1s,0s"],
                     DestinationRates=["DR_OLD,DST_ALL,RT_OLD,*up,4,0,", "DR_NEW,DST_ALL,RT_NEW,*up,4,0,"],
                     Timings=[], RatingPlans=["RP_OLD,DR_OLD,*any,10", "RP_NEW,DR_NEW,*any,10"],
                     RatingProfiles=["cgrates.org,call,S,2026-01-01T00:00:00Z,RP_OLD,",
                                     "cgrates.org,call,S,2026-11-05T10:01:00Z,RP_NEW,"])
    got = rate(spark, plan, [("call", "S", "4930", datetime(2026, 11, 5, 10, 0, 30), 60)])
    assert cost(got[0]) == Decimal("90")


def test_events_are_regrouped_by_piece_only_under_a_tariff_with_an_activation_time_inside(spark, tmp_path):
    """Splitting a call at an ActivationTime takes a second pass over the events (explode, then
    regroup by event); under a tariff whose profiles never change no event can be split, and the
    pass is not made."""
    from jobs.rating import attach_pieces

    events = event_frame(spark, [("call", "S", "4930", datetime(2026, 11, 5, 10), 60)])
    steady = band_plan(tmp_path / "steady")
    changing = band_plan(tmp_path / "changing", RatingProfiles=["cgrates.org,call,S,2026-01-01T00:00:00Z,RP,",
                                                                 "cgrates.org,call,S,2026-11-05T10:00:30Z,RP,"])
    for folder, pieces, regrouped in ((steady, 1, False), (changing, 2, True)):
        with_pieces = attach_pieces(events, CompiledTariff(spark, load_tariff(folder, "Europe/Berlin"), "cgrates.org"),
                                    "Europe/Berlin")
        assert [len(row.pieces) for row in with_pieces.collect()] == [pieces]
        assert ("Aggregate" in with_pieces._jdf.queryExecution().optimizedPlan().toString()) == regrouped


@pytest.mark.parametrize("method, expected", [("*up", "0.1235"), ("*middle", "0.1235"), ("*down", "0.1234")])
def test_rounding_methods(spark, tmp_path, method, expected):
    plan = band_plan(tmp_path, Rates=["RT,0,0.12345,60s,60s,0s"], DestinationRates=[f"DR,DST_ALL,RT,{method},4,0,"],
                     Timings=[], RatingPlans=["RP,DR,*any,10"])
    assert cost(rate(spark, plan, [("call", "S", "4930", datetime(2026, 11, 5, 10), 60)])[0]) == Decimal(expected)


def test_exact_arithmetic_before_the_one_rounding(spark, tmp_path):
    plan = band_plan(tmp_path, Rates=["RT,0,0.10,60s,1s,0s"], DestinationRates=["DR,DST_ALL,RT,*up,4,0,"],
                     Timings=[], RatingPlans=["RP,DR,*any,10"])
    got = rate(spark, plan, [("call", "S", "4930", datetime(2026, 11, 5, 10), 180), ("call", "S", "4930", datetime(2026, 11, 5, 10), 130)])
    assert cost(got[0]) == Decimal("0.3")          # CGRateS gives 0.3001
    assert got[1][2] == Decimal("0.216666666666666667")   # 130 x 0.1 / 60, 18 digits kept
    assert cost(got[1]) == Decimal("0.2167")


def test_max_cost_free_caps_the_total(spark, tmp_path):
    plan = band_plan(tmp_path, Rates=["RT,0.2,1,60s,60s,0s"], DestinationRates=["DR,DST_ALL,RT,*up,2,1.5,*free"],
                     Timings=[], RatingPlans=["RP,DR,*any,10"])
    got = rate(spark, plan, [("call", "S", "4930", datetime(2026, 11, 5, 10), 600), ("call", "S", "4930", datetime(2026, 11, 5, 10), 60)])
    assert cost(got[0]) == Decimal("1.5") and cost(got[1]) == Decimal("1.2")


def test_fallback_subject_and_any_destination_and_longest_prefix(spark, tmp_path):
    plan = write_plan(
        tmp_path / "plan",
        Destinations=["DST_DE,49", "DST_DE_MOB,4915", "DST_FR,33"],
        Rates=["RT_A,0,1,60s,60s,0s", "RT_B,0,2,60s,60s,0s", "RT_C,0,3,60s,60s,0s", "RT_ANY,0,9,60s,60s,0s"],
        DestinationRates=["DR_A,DST_DE,RT_A,*up,4,0,", "DR_B,DST_DE_MOB,RT_B,*up,4,0,", "DR_C,DST_FR,RT_C,*up,4,0,",
                          "DR_ANY,*any,RT_ANY,*up,4,0,"],
        Timings=[], RatingPlans=["RP_OWN,DR_A,*any,10", "RP_OWN,DR_B,*any,10", "RP_FB,DR_C,*any,10", "RP_FB,DR_ANY,*any,10"],
        RatingProfiles=["cgrates.org,call,S,,RP_OWN,FB", "cgrates.org,call,FB,,RP_FB,"],
    )
    at = datetime(2026, 11, 5, 10)
    got = rate(spark, plan, [("call", "S", "4930", at, 60), ("call", "S", "4915112", at, 60), ("call", "S", "3312", at, 60),
                             ("call", "S", "4411", at, 60)])
    assert (cost(got[0]), got[0][3]) == (Decimal("1"), "DST_DE")
    assert (cost(got[1]), got[1][3]) == (Decimal("2"), "DST_DE_MOB")      # longest prefix
    assert (cost(got[2]), got[2][3]) == (Decimal("3"), "DST_FR")          # fallback subject's plan
    assert (cost(got[3]), got[3][3]) == (Decimal("9"), "*any")            # fallback's *any destination


def test_destinations_sharing_a_prefix_tie_break_on_active_timing_then_weight_then_id(spark, tmp_path):
    plan = write_plan(
        tmp_path / "plan",
        Destinations=["DST_WEEKDAY,4930", "DST_WEEKEND,4930", "DST_B,33", "DST_A,33", "DST_C,44", "DST_D,44"],
        Rates=["RT_1,0,1,60s,60s,0s", "RT_2,0,2,60s,60s,0s"],
        DestinationRates=["DR_WD,DST_WEEKDAY,RT_1,*up,4,0,", "DR_WE,DST_WEEKEND,RT_2,*up,4,0,",
                          "DR_A,DST_A,RT_1,*up,4,0,", "DR_B,DST_B,RT_2,*up,4,0,", "DR_C,DST_C,RT_1,*up,4,0,",
                          "DR_D,DST_D,RT_2,*up,4,0,"],
        Timings=["T_WD,*any,*any,*any,1;2;3;4;5,00:00:00", "T_WE,*any,*any,*any,6;7,00:00:00"],
        RatingPlans=["RP,DR_WD,T_WD,20", "RP,DR_WE,T_WE,10", "RP,DR_B,*any,10", "RP,DR_A,*any,10",
                     "RP,DR_C,*any,5", "RP,DR_D,*any,9"],
        RatingProfiles=["cgrates.org,call,S,,RP,"],
    )
    thursday, saturday = utc(2026, 11, 5, 10), utc(2026, 11, 7, 10)
    got = rate(spark, plan, [("call", "S", "4930123", thursday, 60), ("call", "S", "4930123", saturday, 60),
                             ("call", "S", "3312", thursday, 60), ("call", "S", "4412", saturday, 60)])
    # the heavier weekday destination has no active timing on Saturday: the weekend one wins there
    assert [(got[i][3], cost(got[i])) for i in range(4)] == [
        ("DST_WEEKDAY", Decimal("1")), ("DST_WEEKEND", Decimal("2")), ("DST_A", Decimal("1")), ("DST_D", Decimal("2"))]


def test_unratable_events_get_reasons_and_zero_usage_is_free(spark, tmp_path):
    plan = band_plan(tmp_path, Timings=["WD,*any,*any,*any,1;2;3;4;5,00:00:00"], RatingPlans=["RP,DR_DAY,WD,10"])
    sunday, monday = utc(2026, 11, 8, 10), utc(2026, 11, 9, 10)
    got = rate(spark, plan, [("call", "S", "3312", monday, 60), ("call", "S", "4930", sunday, 60),
                             ("sms", "S", "4930", monday, 1), ("call", "S", "3312", monday, 0)])
    assert got[0][0] == "UNAUTHORIZED_DESTINATION"
    assert got[1][0] == "NO_ACTIVE_TIMING"
    assert got[2][0] == "RATING_PLAN_NOT_FOUND"
    assert cost(got[3]) == 0


def test_data_sms_and_roaming_rates(spark, tmp_path):
    plan = write_plan(
        tmp_path / "plan",
        Destinations=["DST_FR_PLMN,20801", "DST_DE,49"],
        Rates=["RT_DATA,0,0.01,1048576,102400,0", "RT_DATA,0,0.005,1048576,102400,1073741824",
               "RT_ROAM,0.5,4,1048576,10240,0", "RT_SMS,0,0.09,1,1,0"],
        DestinationRates=["DR_DATA,*any,RT_DATA,*up,4,0,", "DR_ROAM,DST_FR_PLMN,RT_ROAM,*up,4,0,", "DR_SMS,DST_DE,RT_SMS,*up,4,0,"],
        Timings=[], RatingPlans=["RP_DATA,DR_DATA,*any,10", "RP_ROAM,DR_ROAM,*any,10", "RP_SMS,DR_SMS,*any,10"],
        RatingProfiles=["cgrates.org,data,*any,,RP_DATA,", "cgrates.org,data_roaming,*any,,RP_ROAM,",
                        "cgrates.org,sms,*any,,RP_SMS,"],
    )
    at = datetime(2026, 11, 5, 10)
    mib = 1048576
    got = rate(spark, plan, [("data", "P", None, at, 3 * mib), ("data", "P", None, at, 1024 * mib + 1),
                             ("data_roaming", "P", "20801", at, mib), ("sms", "P", "4930", at, 1)])
    # increments laid from the start, the last one charged whole: ceil(usage / increment) of them
    assert cost(got[0]) == Decimal("0.0303")          # 31 x 102400 B x 0.01 / MiB = 0.0302734375, *up
    # the 10486th increment starts below the 1 GiB group start and runs past the end of usage,
    # so the cheaper group is never in force at an increment's start
    assert cost(got[1]) == Decimal("10.2403")         # 10486 x 102400 x 0.01 / MiB = 10.240234375
    assert cost(got[2]) == Decimal("4.5235")          # 0.5 + 103 x 10240 x 4 / MiB = 4.5234375
    assert cost(got[3]) == Decimal("0.09")


def test_the_single_run_path_rates_exactly_as_the_general_one(spark):
    """Events with one plan row in force throughout are costed without lambdas (`_single_run`);
    every event, on that path or not, gets the same result as the general fold, to the last digit."""
    from random import Random

    from jobs.rating import _single_run, attach_pieces

    random = Random(11)
    tz, tariff = "Europe/Berlin", load_tariff("rating_rules/default", "Europe/Berlin")
    compiled = CompiledTariff(spark, tariff, "cgrates.org")
    # weekdays, a weekend, a holiday, both DST changes; local starts just before the bands' Times and midnight
    days = [datetime(2026, 3, 29), datetime(2026, 10, 25), datetime(2026, 11, 5), datetime(2026, 11, 7),
            datetime(2026, 12, 25), datetime(2026, 12, 31)]
    starts = [timedelta(hours=h, seconds=s) for h, s in ((0, 0), (1, 3570), (2, 1800), (7, 3590), (7, 3599.5),
                                                         (12, 0), (17, 3560), (23, 3570))]
    calls = [("P_BASIC", "4930123"), ("P_PREMIUM", "4915112345"), ("P_BIZ_CHF", "33123456"), ("P_BASIC", "1212555"),
             ("P_NONE", "99999")]
    events = [("call", plan_id, destination, utc(*day.timetuple()[:3]) + start, usage)
              for day in days for start in starts for plan_id, destination in calls
              for usage in (0, 1, 29, 30, 31, 61, 599, 601, 3600 + 17)]
    for _ in range(300):
        day = random.choice(days) + timedelta(seconds=random.randrange(0, 86400), microseconds=random.choice([0, 500000]))
        events += [("sms", "P_BASIC", random.choice(["4915112345", "447700900"]), day, 1),
                   ("data", "P_BASIC", None, day, random.choice([0, 1, 102400, 102401, 2**30 + 1, random.randrange(1, 3 * 2**30)])),
                   ("data_roaming", "P_BASIC", "20801", day, random.randrange(1, 2**24)),
                   ("call", "P_BASIC", "4930123", day, random.randrange(1, 4 * 3600))]
    frame = event_frame(spark, events)

    fast = {r.event_id: tuple(r) for r in rate_events(frame, compiled, tz).collect()}
    general = {r.event_id: tuple(r) for r in rate_events(frame, compiled, tz, single_run=False).collect()}
    assert fast == general
    single = _single_run(attach_pieces(frame, compiled, tz), compiled.shape, tz).where("_single").count()
    assert 0.3 * len(events) < single < 0.9 * len(events)         # both paths were taken
    assert sum(r[-1] is not None and r[-1] > 0 for r in general.values()) > 0.3 * len(events)


def test_rating_runs_with_small_generated_methods_and_restores_the_setting(spark):
    from jobs.rating import small_generated_methods

    key = "spark.sql.codegen.hugeMethodLimit"
    before = spark.conf.get(key)
    with small_generated_methods(spark):
        assert spark.conf.get(key) == "8000"
    assert spark.conf.get(key) == before != "8000"
