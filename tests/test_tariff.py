import pytest

from jobs.common.config import PROJECT_ROOT
from jobs.tariff import TariffError, load_tariff, parse_quantity
from tests.conftest import CGRATES_SAMPLES
from tests.test_rating import write_plan


@pytest.mark.parametrize("text, seconds, units", [("60s", 60, 60 * 10**9), ("1m30s", 90, 90 * 10**9), ("0s", 0, 0),
                                                   ("60", 60, 60), ("1h", 3600, 3600 * 10**9), ("1048576", 1048576, 1048576)])
def test_go_durations_and_plain_numbers(text, seconds, units):
    q = parse_quantity(text)
    assert q.seconds == seconds and q.units == units


@pytest.mark.skipif(not CGRATES_SAMPLES.exists(), reason="../shared/data not beside the checkout")
@pytest.mark.parametrize("plan", ["tutorial", "oldtutorial"])
def test_real_cgrates_plans_load_unchanged(plan):
    tariff = load_tariff(CGRATES_SAMPLES / plan, "UTC")
    assert tariff.rating_plans and tariff.profiles and len(tariff.version) == 16


def test_default_plan_loads_with_billing_files():
    tariff = load_tariff(PROJECT_ROOT / "rating_rules" / "default", "Europe/Berlin")
    assert tariff.plans and tariff.bundles and tariff.taxes
    assert any(tag.startswith("TM_HOLIDAY_2026") for tag in tariff.timings)


def test_invalid_plans_name_file_line_and_field(tmp_path):
    plan = write_plan(tmp_path / "bad", Destinations=["DST,49"], Rates=["RT,0,abc,60s,60s,0s"],
                      DestinationRates=["DR,DST_NOPE,RT,*up,4,0,"], Timings=[],
                      RatingPlans=["RP,DR_MISSING,*any,10"], RatingProfiles=["cgrates.org,call,S,,RP_NOPE,"])
    with pytest.raises(TariffError) as error:
        load_tariff(plan, "UTC")
    text = "\n".join(error.value.errors)
    assert "Rates.csv:2" in text and "DestinationRates.csv:2" in text and "unknown DestinationId 'DST_NOPE'" in text
    assert "RatingPlans.csv:2" in text and "RatingProfiles.csv:2" in text


def test_missing_required_file_is_an_error(tmp_path):
    plan = write_plan(tmp_path / "p", Destinations=["DST,49"])
    with pytest.raises(TariffError, match="Rates.csv: required file missing"):
        load_tariff(plan, "UTC")
