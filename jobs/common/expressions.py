"""Small Spark column expressions several stages share."""
from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Mapping
from zoneinfo import ZoneInfo

from pyspark.sql import Column
from pyspark.sql import functions as F


def lookup(mapping: Mapping, key: Column) -> Column:
    """`mapping[key]` as a literal Spark map (null where the key is absent): no join, no UDF."""
    return F.create_map(*[F.lit(x) for pair in mapping.items() for x in pair])[key]


def local_date(ts: Column, tz: str) -> Column:
    """The operator-zone calendar date of a UTC timestamp."""
    return F.to_date(F.from_utc_timestamp(ts, tz))


def local_midnight_utc(day: date, tz: str) -> datetime:
    """The instant the operator-zone `day` begins, as a naive UTC datetime (the session's zone)."""
    return datetime.combine(day, time(), ZoneInfo(tz)).astimezone(timezone.utc).replace(tzinfo=None)


def sql_literal(value) -> str:
    """A Python value as a Spark SQL literal (timestamps are UTC, the session's zone)."""
    if isinstance(value, datetime):
        return f"TIMESTAMP'{value:%Y-%m-%d %H:%M:%S.%f}'"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)
