import pytest

from jobs.common.jars import MissingJarsError, required_jars


def test_delta_round_trip_through_the_session_factory(spark, conf):
    from jobs.common.delta_io import merge, read_table

    path = conf.table_path("test", "round_trip")
    frame = spark.createDataFrame([(1, "1.10"), (2, "2.20")], "id int, amount string").selectExpr(
        "id", "cast(amount as decimal(10,2)) as amount")
    merge(frame, path, ["id"])
    merge(frame, path, ["id"])
    back = read_table(spark, path)
    assert sorted((r.id, str(r.amount)) for r in back.collect()) == [(1, "1.10"), (2, "2.20")]
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"


def test_missing_jars_give_a_clear_message_not_a_stack_trace(base_conf, tmp_path):
    settings = base_conf.spark.model_copy(update={"jars_dir": str(tmp_path)})
    with pytest.raises(MissingJarsError, match=r"Delta jars missing .* run `make jars`"):
        required_jars(settings)
