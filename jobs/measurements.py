"""TS 32.435 measurement files: whole-file inspection, bronze rows, and the typed silver rows.

A file is first checked as a whole with Python's XML parser (on the executors, beside the CSV
inspection): not well-formed, not a `measCollecFile`, or a value without its counter name, and
the whole file is rejected with `BAD_XML` and the parser's message. Good files are then read by
Spark's built-in `xml` source (one row per file, the root as row tag) and exploded into one
bronze row per counter value, all strings, numbered in document order (`line_number`).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.common.expressions import lookup
from jobs.common.inspection import Inspection, decompressed
from schemas import reason_codes as R
from schemas.landing import COUNTER_METRICS, OBJECT_TYPES
from schemas.tables import MEAS_COLLEC_FILE


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def inspect_measurement_file(name: str, content: bytes) -> Inspection:
    """Structure checks of one measCollecFile; record_count is the number of counter values."""
    sha, data, failed = decompressed(name, content)
    if failed:
        return failed
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        return Inspection(sha, None, None, R.BAD_XML, f"not well-formed XML: {exc}")
    if _local(root.tag) != "measCollecFile":
        return Inspection(sha, None, None, R.BAD_XML, f"root element is <{_local(root.tag)}>, not <measCollecFile>")
    values = 0
    infos = [info for meas_data in _children(root, "measData") for info in _children(meas_data, "measInfo")]
    if not infos:
        return Inspection(sha, 0, None, R.EMPTY_FILE, "measCollecFile has no measInfo")
    for n, info in enumerate(infos, 1):
        period = _children(info, "granPeriod")
        if not period or not period[0].get("endTime") or not period[0].get("duration"):
            return Inspection(sha, None, None, R.BAD_XML, f"measInfo #{n} lacks granPeriod duration/endTime")
        positions = {t.get("p") for t in _children(info, "measType")}
        for value in _children(info, "measValue"):
            if not value.get("measObjLdn"):
                return Inspection(sha, None, None, R.BAD_XML, f"measInfo #{n} has a measValue without measObjLdn")
            for r in _children(value, "r"):
                if r.get("p") not in positions:
                    return Inspection(sha, None, None, R.BAD_XML,
                                      f"measInfo #{n}: value p={r.get('p')!r} of {value.get('measObjLdn')} has no measType")
                values += 1
    return Inspection(sha, values, None)


def read_measurement_files(spark: SparkSession, paths: list[str]) -> DataFrame:
    """One row per file: source path + the parsed tree (strings)."""
    return (spark.read.format("xml").option("rowTag", "measCollecFile").option("mode", "PERMISSIVE")
            .schema(MEAS_COLLEC_FILE).load(paths)
            .select(F.col("_metadata.file_path").alias("path"), "measData"))


def to_bronze(files: DataFrame, source_file: Column, run_id: str, ingest_date) -> DataFrame:
    """Parsed files -> one bronze row per counter value (measInfo x measValue x r), document order."""
    infos = files.select("path", source_file.alias("source_file"), F.posexplode("measData").alias("d", "meas_data"))
    infos = infos.select("path", "source_file", "d", F.col("meas_data.managedElement._localDn").alias("managed_element"),
                         F.posexplode("meas_data.measInfo").alias("i", "info"))
    values = infos.select("*", F.posexplode("info.measValue").alias("v", "mv"))
    rs = values.select("*", F.posexplode("mv.r").alias("k", "r"))
    counter = F.element_at(F.filter("info.measType", lambda t: t["_p"] == F.col("r._p")), 1)["_VALUE"]
    order = Window.partitionBy("source_file").orderBy("d", "i", "v", "k")
    columns = {
        "managed_element": F.col("managed_element"), "meas_info_id": F.col("info._measInfoId"),
        "granularity_duration": F.col("info.granPeriod._duration"), "granularity_end": F.col("info.granPeriod._endTime"),
        "meas_obj_ldn": F.col("mv._measObjLdn"), "counter": F.trim(counter), "value": F.trim("r._VALUE"),
        "suspect": F.trim("mv.suspect"),
    }
    return rs.select(
        *[c.alias(name) for name, c in columns.items()],
        F.lit(None).cast("map<string,string>").alias("extra_columns"), "source_file",
        F.row_number().over(order).cast("long").alias("line_number"),
        F.to_json(F.struct(*[c.alias(name) for name, c in columns.items()])).alias("raw_record"),
        F.lit(None).cast("string").alias("parse_error"), F.lit(run_id).alias("run_id"),
        F.lit(ingest_date).cast("date").alias("ingest_date"))


_DURATION = r"^PT([0-9]+)S$"


def standardise(bronze: DataFrame) -> DataFrame:
    """Bronze counter values -> typed rows with a reason where a value cannot be used.

    Columns of TRAFFIC_MEASUREMENTS plus reason_code / reason_detail (null when usable). The
    object is the last RDN of measObjLdn (`...,TrunkGroup=TG0101` -> trunk_group TG0101).
    """
    last_rdn = F.element_at(F.split("meas_obj_ldn", ","), -1)
    rdn_type = F.trim(F.split(last_rdn, "=").getItem(0))
    object_type = lookup(OBJECT_TYPES, rdn_type)
    metric = lookup(COUNTER_METRICS, F.col("counter"))
    seconds = F.expr(f"try_cast(regexp_extract(granularity_duration, '{_DURATION}', 1) AS BIGINT)")
    period_end = F.try_to_timestamp(F.col("granularity_end"))
    value = F.expr("try_cast(value AS BIGINT)")
    reason = (F.when(period_end.isNull(), F.lit(R.BAD_TIMESTAMP))
              .when(seconds.isNull() | (seconds <= 0), F.lit(R.BAD_VALUE))
              .when(value.isNull() | (value < 0), F.lit(R.BAD_VALUE)))
    detail = (F.when(period_end.isNull(), F.concat(F.lit("granPeriod endTime not ISO 8601: "), F.coalesce("granularity_end", F.lit("(none)"))))
              .when(seconds.isNull() | (seconds <= 0), F.concat(F.lit("granPeriod duration not PT<n>S: "),
                                                                 F.coalesce("granularity_duration", F.lit("(none)"))))
              .when(value.isNull() | (value < 0), F.concat(F.lit("counter value not a non-negative integer: "),
                                                            F.coalesce("value", F.lit("(none)")))))
    return bronze.select(
        object_type.alias("object_type"), F.trim(F.split(last_rdn, "=").getItem(1)).alias("object_id"),
        "managed_element", "meas_obj_ldn", "counter", metric.alias("metric"),
        (period_end - F.make_dt_interval(secs=seconds)).alias("period_start"), period_end.alias("period_end"),
        value.alias("value"), F.coalesce(F.lower("suspect") == "true", F.lit(False)).alias("suspect"),
        "source_file", "line_number", "raw_record", "run_id", "ingest_date",
        reason.alias("reason_code"), detail.alias("reason_detail"))


def latest_per_counter(rows: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(kept, superseded): one value per object, counter and period; a later file replaces an earlier one."""
    key = ["meas_obj_ldn", "counter", "period_start"]
    rank = F.row_number().over(Window.partitionBy(*key).orderBy(F.col("source_file").desc(), F.col("line_number").desc()))
    ranked = rows.withColumn("_rank", rank)
    return ranked.where("_rank = 1").drop("_rank"), ranked.where("_rank > 1").drop("_rank")
