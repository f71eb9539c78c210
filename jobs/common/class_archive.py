"""The driver JVM's class-data archive (CDS): built once by `make setup`, mapped by every driver.

Every Airflow task is a fresh spark-submit, whose driver JVM otherwise reads, parses and verifies
some 15,000 Spark and Delta classes out of jars before and during its first queries. A dynamic
archive (`-XX:ArchiveClassesAtExit`) holds them ready to map. It is recorded by one training run:
a tiny generated day through every stage and a bill run, in one driver.

The JVM checks the archive when it starts: one built by another JDK or for other jars is not used
(with one warning line), a missing one silently not, so a stale archive costs the speed-up, never a
run. `make class-archive` builds it again.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from jobs.common.config import PROJECT_ROOT, Config, SparkSettings, project_path

TRAINING_DAY = date(2026, 11, 9)


def archive_path(settings: SparkSettings) -> Path | None:
    """Where the archive is (or will be built); None where configuration turns it off."""
    if not settings.class_archive:
        return None
    return project_path(settings.class_archive)


def java_options(settings: SparkSettings) -> list[str]:
    """The driver flag that maps the archive, where one has been built."""
    path = archive_path(settings)
    return [f"-XX:SharedArchiveFile={path}"] if path is not None and path.is_file() else []


def training_conf(conf: Config, workdir: Path, dump: Path) -> Config:
    """The training run's settings: the tiny day's folders, a local driver that records its classes."""
    from jobs.common.spark import driver_java_options

    overrides = {"spark.master": "local[2]", "spark.shuffle_partitions": 2, "spark.short_runs": True,
                 "spark.class_archive": ""}
    plain = conf.model_copy(update={"spark": conf.spark.model_copy(update=overrides)})
    options = [*driver_java_options(plain), f"-XX:ArchiveClassesAtExit={dump}"]
    spark_settings = plain.spark.model_copy(update={"extra_conf": {**plain.spark.extra_conf,
                                                                   "spark.driver.extraJavaOptions": " ".join(options)}})
    trained = plain.model_copy(update={
        "spark": spark_settings,
        # a tiny day breaches the production share of good records; that is not what is trained
        "validation": plain.validation.model_copy(update={"mostly": 0.5}),
        "assurance": plain.assurance.model_copy(update={"leakage_budget_pct": 100.0})})
    return trained.with_paths(warehouse=str(workdir / "warehouse"), landing=str(workdir / "landing"),
                              reference=str(workdir / "reference"), reports=str(workdir / "reports"))


def train(conf: Config, workdir: Path, dump: Path) -> None:
    """One driver runs a tiny generated day through every stage and a bill run, then exits, which
    is when the JVM writes the classes it loaded to `dump`."""
    from jobs import assure, bill, collect, publish, rate, validate
    from jobs.common.spark import build_spark
    from jobs.generate.cdrs import GeneratorSettings, generate

    generate(GeneratorSettings(out=workdir, seed=17, subscribers=20, start=TRAINING_DAY, days=1, events_per_day=40,
                               timezone=conf.operator.timezone, home_country_code=conf.operator.home_country_code))
    trained = training_conf(conf, workdir, dump)
    spark = build_spark(trained, app_name="cdr-billing-class-archive")
    for stage in (collect, validate, rate, assure, publish):
        stage.run(spark, trained, TRAINING_DAY)
    bill.run(spark, trained, TRAINING_DAY + timedelta(days=1))
    java = spark.sparkContext._gateway.proc        # the driver JVM PySpark started
    spark.stop()
    java.stdin.close()                             # its cue to exit (and write the archive)
    java.wait(timeout=600)


def build(conf: Config) -> Path:
    """Record the archive in a child process and move it into place (running drivers keep the old one)."""
    target = archive_path(conf.spark)
    if target is None:
        raise SystemExit("spark.class_archive is empty: the class archive is turned off")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    dump = target.parent / f".{target.name}.{os.getpid()}.tmp"        # same file system: the move is atomic
    with tempfile.TemporaryDirectory(prefix="cdr-billing-class-archive-") as work:
        log = target.parent / "class-archive.log"
        with log.open("w") as handle:
            result = subprocess.run([sys.executable, "-m", "jobs.common.class_archive", "--train", work, "--dump", str(dump)],
                                    cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    if result.returncode != 0 or not dump.is_file():
        dump.unlink(missing_ok=True)
        raise SystemExit(f"the class archive was not recorded (exit {result.returncode}); see {log}")
    os.replace(dump, target)
    print(f"ok {target} ({target.stat().st_size / 2**20:.0f} MB, recorded in {time.monotonic() - started:.0f}s)")
    return target


def main(argv: list[str] | None = None) -> None:
    from jobs.common.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    conf = load_config()
    if args.train:
        train(conf, args.train, args.dump)
    else:
        build(conf)


if __name__ == "__main__":
    main()
