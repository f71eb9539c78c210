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


def test_the_driver_maps_the_class_archive_setup_built(spark, base_conf):
    """`make setup` records the archive and every driver maps it: the JVM leaves one it cannot use
    (another JDK, other jars) unmapped without failing, so only its memory map shows it at work."""
    from jobs.common.class_archive import archive_path

    archive = archive_path(base_conf.spark)
    assert archive is not None and archive.is_file(), f"no class archive at {archive}: run `make class-archive`"
    java = spark.sparkContext._gateway.proc        # the driver JVM PySpark started for this session
    with open(f"/proc/{java.pid}/maps") as maps:
        mapped = {line.split(maxsplit=5)[-1].strip() for line in maps if len(line.split()) == 6}
    assert str(archive) in mapped, f"the driver (pid {java.pid}) does not map {archive}: stale? run `make class-archive`"


def test_the_class_archive_flag_is_given_only_where_an_archive_exists(base_conf, tmp_path):
    from jobs.common.spark import driver_java_options

    archive = tmp_path / "driver-classes.jsa"
    with_archive = base_conf.model_copy(update={"spark": base_conf.spark.model_copy(update={"class_archive": str(archive)})})
    assert not any("SharedArchiveFile" in option for option in driver_java_options(with_archive))
    archive.write_bytes(b"recorded")
    assert f"-XX:SharedArchiveFile={archive}" in driver_java_options(with_archive)
    turned_off = base_conf.model_copy(update={"spark": base_conf.spark.model_copy(update={"class_archive": ""})})
    assert not any("SharedArchiveFile" in option for option in driver_java_options(turned_off))


def _compiles(spark) -> bool:
    frame = spark.range(10).selectExpr("id * 2 AS doubled")          # no exchange: no adaptive plan to wait for
    return frame._jdf.queryExecution().executedPlan().getClass().getSimpleName() == "WholeStageCodegenExec"


def test_tests_interpret_expressions_unless_marked(spark):
    assert not _compiles(spark)
    assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"


@pytest.mark.generated_code
def test_tests_marked_generated_code_compile_as_real_volumes_do(spark):
    assert _compiles(spark)
    assert spark.conf.get("spark.sql.codegen.factoryMode", "FALLBACK") != "NO_CODEGEN"
