import pytest
from pyspark.sql import functions as F

from jobs.common.config import OperatorSettings
from jobs.standardise import normalise_number

pytestmark = pytest.mark.generated_code


@pytest.mark.parametrize("dialled, expected", [
    ("+491511234567", "491511234567"), ("00441234567", "441234567"), ("030123456", "4930123456"),
    ("0151 123-45 67", "491511234567"), ("112", "112"), ("491511234567", "491511234567"),
    ("+49AB12C", "49AB12C"), ("", None),
])
def test_numbers_normalise_to_e164_digits(spark, dialled, expected):
    frame = spark.createDataFrame([(dialled,)], "n string")
    assert frame.select(normalise_number("n", OperatorSettings()).alias("x")).first().x == expected


def test_normalisation_off_keeps_the_number_as_recorded(spark):
    frame = spark.createDataFrame([("0256123",), ("+4930",)], "n string")
    op = OperatorSettings(normalise_numbers=False)
    assert [r.x for r in frame.select(normalise_number("n", op).alias("x")).collect()] == ["0256123", "4930"]
