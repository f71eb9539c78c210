"""Reference data read at the edges: the CRM's subscribers.csv as validity periods in UTC."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from schemas.landing import SUBSCRIBER_COLUMNS, SUBSCRIBERS_FILE


def local_instant(col, timezone: str):
    """An ISO date or date-time, with or without offset; no offset means the operator's zone."""
    text = F.trim(col)
    with_offset = F.try_to_timestamp(text, F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSS]XXX"))
    local_dt = F.coalesce(F.try_to_timestamp(text, F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSS]")),
                          F.try_to_timestamp(text, F.lit("yyyy-MM-dd HH:mm:ss")),
                          F.try_to_timestamp(text, F.lit("yyyy-MM-dd")))
    return F.coalesce(with_offset, F.to_utc_timestamp(local_dt, timezone))


def subscriber_periods(raw: DataFrame, timezone: str) -> DataFrame:
    """One row per number and validity interval [valid_from_at, valid_to_at) in UTC.

    Overlapping rows of one number are clipped at the next row's start, so that an event
    matches at most one row (the later row wins the overlap) and no join can duplicate it.
    """
    periods = raw.select(
        F.trim("account_id").alias("account_id"), F.trim("msisdn").alias("msisdn"), F.trim("plan_id").alias("plan_id"),
        F.col("bill_cycle_day").cast("int").alias("bill_cycle_day"), F.upper(F.trim("currency")).alias("currency"),
        F.trim("tax_region").alias("tax_region"),
        local_instant(F.col("valid_from"), timezone).alias("valid_from_at"),
        local_instant(F.nullif(F.trim("valid_to"), F.lit("")), timezone).alias("valid_to_at"),
    ).where(F.col("msisdn").isNotNull() & F.col("valid_from_at").isNotNull())
    next_start = F.lead("valid_from_at").over(Window.partitionBy("msisdn").orderBy("valid_from_at", "account_id"))
    clipped = F.when(next_start.isNotNull() & (F.col("valid_to_at").isNull() | (F.col("valid_to_at") > next_start)),
                     next_start).otherwise(F.col("valid_to_at"))
    return periods.withColumn("valid_to_at", clipped)


def read_subscribers(spark: SparkSession, reference_dir: str, timezone: str) -> DataFrame:
    raw = (spark.read.option("header", "true").option("mode", "PERMISSIVE")
           .schema(",".join(f"{c} string" for c in SUBSCRIBER_COLUMNS))
           .csv(f"{reference_dir.rstrip('/')}/{SUBSCRIBERS_FILE}"))
    return subscriber_periods(raw, timezone)


def attach_subscriber(events: DataFrame, subscribers: DataFrame, number_col: str = "served_msisdn",
                      at_col: str = "event_start") -> DataFrame:
    """Add account_id, plan_id, currency, tax_region of the row valid at `at_col` (null if none)."""
    subs = subscribers.select(
        F.col("msisdn").alias("_msisdn"), "valid_from_at", "valid_to_at", "account_id", "plan_id", "currency", "tax_region")
    cond = ((F.col(number_col) == F.col("_msisdn")) & (F.col(at_col) >= F.col("valid_from_at")) &
            (F.col("valid_to_at").isNull() | (F.col(at_col) < F.col("valid_to_at"))))
    drop = [c for c in ("account_id", "plan_id", "currency", "tax_region") if c in events.columns]
    return (events.drop(*drop).join(subs, cond, "left")
            .drop("_msisdn", "valid_from_at", "valid_to_at"))
