"""The one SparkSession factory used by every job, the CLI and the tests."""
from __future__ import annotations

import os
import sys

from jobs.common import class_archive
from jobs.common.config import Config
from jobs.common.jars import required_jars

DELTA_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

# A short run's driver evaluates expressions without generating Java code for them: on a tiny
# day, compiling each new plan's generated classes (Janino, then the JIT) cost more than the
# rows it then ran on. Six stages each in a fresh driver: 158.6 and 161.3 s generated, 133.7
# and 127.4 s interpreted (README, "Configuration"). Both keys: factoryMode alone leaves
# whole-stage code generation on.
INTERPRETED_EXPRESSIONS = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}

# A short run's JVMs compile with C1 only: a tiny day's five stages, a fresh JVM each, took 632
# JVM CPU-s with C2, 369 with C1 only. C1 alone gets a 48 MB code cache, which one driver running
# collect then validate filled (the JVM then flushes compiled code and compiles it again); it
# used 60 MB for a whole day.
SHORT_RUN_JIT = ["-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=256m"]


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the Python driver with the gateway already running: master, jars
    # and memory are the submitter's business then (SparkSubmitOperator, a cluster).
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_settings(conf: Config) -> dict[str, str]:
    """Every Spark setting the pipeline depends on, for the builder and for spark-submit."""
    settings = {
        **DELTA_SETTINGS,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(conf.spark.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.databricks.delta.snapshotPartitions": str(max(1, conf.spark.shuffle_partitions)),
        "spark.databricks.delta.stalenessLimit": "0",
        # A MERGE into a partitioned table otherwise hash-partitions its rows by the partition
        # column first: a day's events share one event_date, so one task wrote the whole day while
        # the other core idled, and the shuffle of every wide row spilled (5 GB at 10M records).
        "spark.databricks.delta.merge.repartitionBeforeWrite.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # INFO lines of every spark-submit end up in the Airflow task log, line by line
        "spark.log.level": "WARN",
        "spark.driver.extraJavaOptions": " ".join(driver_java_options(conf)),
    }
    if conf.spark.short_runs:
        settings.update(INTERPRETED_EXPRESSIONS)
        # a cluster starts executors for the run too: they live for its seconds as well
        settings["spark.executor.extraJavaOptions"] = " ".join(SHORT_RUN_JIT)
    settings.update(conf.spark.extra_conf)
    return settings


def driver_java_options(conf: Config) -> list[str]:
    """The driver JVM's flags (set when it starts: by spark-submit, or by PySpark's launcher)."""
    options = ["-Dlog4j2.level=WARN", *class_archive.java_options(conf.spark)]
    return options + SHORT_RUN_JIT if conf.spark.short_runs else options


def build_spark(conf: Config, app_name: str | None = None):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name or conf.spark.app_name)
    if not _launched_by_spark_submit():
        jars = required_jars(conf.spark)
        builder = (
            builder.master(conf.spark.master)
            .config("spark.jars", ",".join(str(j) for j in jars))
            .config("spark.driver.memory", conf.spark.driver_memory)
            .config("spark.ui.enabled", "false" if conf.spark.master.startswith("local") else "true")
        )
        # Python workers must run an interpreter with the pinned packages, not whatever python3 is
        # on PATH: this one in local mode, the configured one on a cluster. (PySpark reads
        # PYSPARK_PYTHON when the context starts; the conf key alone only reaches spark-submit.)
        python = conf.spark.extra_conf.get("spark.pyspark.python") or (
            sys.executable if conf.spark.master.startswith("local") else None)
        if python:
            os.environ.setdefault("PYSPARK_PYTHON", python)
            builder = builder.config("spark.pyspark.python", python)
    for key, value in session_settings(conf).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if not spark.sparkContext.master.startswith("local"):
        ship_project_code(spark)
    return spark


def ship_project_code(spark) -> None:
    """Executors on a cluster import jobs/ and schemas/ (file inspection runs there): the driver
    sends its own copy, so a cluster needs only Python with the pinned packages, never a deploy."""
    import tempfile
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    archive = Path(tempfile.mkdtemp(prefix="cdr-billing-code-")) / "cdr_billing_code.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for package in ("jobs", "schemas"):
            for source in (root / package).rglob("*"):
                if source.is_file() and "__pycache__" not in source.parts:
                    bundle.write(source, source.relative_to(root).as_posix())
    spark.sparkContext.addPyFile(str(archive))
