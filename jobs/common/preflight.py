"""Checks before a writing command touches any table: one clear line instead of a half-done run."""
from __future__ import annotations

import uuid

from jobs.common.config import Config


class PreflightError(RuntimeError):
    """The run cannot start; nothing has been written."""


def check_rules(conf: Config) -> None:
    """Load and validate the tariff plan (raises TariffError naming file:line field)."""
    from jobs.tariff import load_tariff

    load_tariff(conf.paths.rules, conf.operator.timezone)


def check_warehouse(spark, conf: Config) -> None:
    """The warehouse is reachable and writable: a probe file is created and removed through the
    same Hadoop file system Delta uses (local, HDFS, S3A, ... as the path says). Each run removes
    only its own probe: two runs started together each check the warehouse at the same moment."""
    jvm = spark.sparkContext._jvm
    root = conf.paths.warehouse.rstrip("/")
    try:
        path = jvm.org.apache.hadoop.fs.Path(f"{root}/_preflight-{uuid.uuid4().hex}")
        fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        fs.create(path, False).close()
        fs.delete(path, False)
    except Exception as exc:  # py4j wraps the JVM's IOException; its first line says why
        reason = str(exc).strip().splitlines()
        java = next((line for line in reason if "Exception" in line and ":" in line), reason[0] if reason else "")
        java = java.strip().lstrip(": ")
        raise PreflightError(f"warehouse {root} is not writable or not reachable: {java}") from None
