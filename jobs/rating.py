"""The rating algebra (../shared/spec/rating.md), vectorised in Spark with built-in expressions.

1. Profile: the tariff is compiled (in Python, once) into contiguous segments per
   (category, subject) with the ordered chain of rating plans to try (own plan, then fallbacks,
   at most three hops). An event joins the segments it overlaps (a voice call crossing an
   ActivationTime gets one piece per segment).
2. Destination: the number's prefixes (and '' for `*any`) are exploded and equi-joined with the
   broadcast (rating plan, prefix) table; the lowest chain index, then the longest prefix, wins;
   destinations sharing that prefix are told apart by a timing active at the piece's start, then
   weight, then id.
3. Timing and rate group: at each boundary where the rate may change (timing start times and
   local midnights in the operator's zone, group-interval starts, piece starts) the active row of
   the piece is chosen (weight, then latest Time, then file order) and its group by usage so far.
4. Cost: increments are laid end to end across those boundaries by a fold (`aggregate`), each
   constant-rate run costing `increments x RateIncrement x Rate / RateUnit` (one division,
   decimal(38,18)), summed exactly, rounded half-even to 12 digits, capped by MaxCost *free,
   then rounded once with the method and decimals of the DestinationRate with most decimals.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (ArrayType, DecimalType, DoubleType, IntegerType, LongType, StringType, StructField,
                               StructType, TimestampType)

from jobs.tariff import Tariff, TariffError
from schemas import reason_codes as R

MAX_FALLBACK_HOPS = 3
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=timezone.utc)
PRICE = DecimalType(14, 8)
EXACT = DecimalType(30, 18)
SEG_NUMERATOR = DecimalType(28, 8)
DIVISOR = DecimalType(13, 0)

GROUP = StructType([
    StructField("gis_s", LongType()), StructField("unit_s", LongType()), StructField("inc_s", LongType()),
    StructField("gis_u", LongType()), StructField("unit_u", LongType()), StructField("inc_u", LongType()),
    StructField("connect_fee", PRICE), StructField("rate", PRICE),
])
ROW = StructType([
    StructField("years", ArrayType(IntegerType())), StructField("months", ArrayType(IntegerType())),
    StructField("month_days", ArrayType(IntegerType())), StructField("week_days", ArrayType(IntegerType())),
    StructField("time_s", IntegerType()), StructField("weight", DoubleType()), StructField("neg_order", IntegerType()),
    StructField("dr_id", StringType()), StructField("rounding_method", StringType()),
    StructField("rounding_decimals", IntegerType()), StructField("max_cost", PRICE),
    StructField("max_cost_strategy", StringType()), StructField("groups", ArrayType(GROUP)),
])
SEGMENTS = StructType([
    StructField("category", StringType()), StructField("subject", StringType()), StructField("seg_from", TimestampType()),
    StructField("seg_to", TimestampType()), StructField("chain", ArrayType(StringType())),
])
PLAN_ROWS = StructType([StructField("rp_id", StringType()), StructField("destination_id", StringType()),
                        StructField("rows", ArrayType(ROW))])
TIMING = StructType([
    StructField("years", ArrayType(IntegerType())), StructField("months", ArrayType(IntegerType())),
    StructField("month_days", ArrayType(IntegerType())), StructField("week_days", ArrayType(IntegerType())),
    StructField("time_s", IntegerType()),
])
TIE_TIMINGS = StructType([StructField("rp_id", StringType()), StructField("destination_id", StringType()),
                          StructField("timings", ArrayType(TIMING))])


# ---------------------------------------------------------------- compile (driver, once per tariff)

def _active_profile(rows, instant):
    best = None
    for row in rows:
        if row.activation <= instant and (best is None or row.activation > best.activation):
            best = row
    return best


def _chain(by_subject, subject, instant, hops, top_level=True) -> list[str]:
    rows = by_subject.get(subject, [])
    row = _active_profile(rows, instant)
    if row is None:
        # the subject's part before its first ActivationTime (or no rows at all) goes to *any
        if top_level and subject != "*any":
            return _chain(by_subject, "*any", instant, hops, top_level=False)
        return []
    chain = [row.rp_id]
    if hops < MAX_FALLBACK_HOPS:
        for fallback in row.fallbacks:
            chain += _chain(by_subject, fallback, instant, hops + 1, top_level=False)
    return list(dict.fromkeys(chain))


def compile_segments(tariff: Tariff, tenant: str) -> list[tuple]:
    """(category, subject, seg_from, seg_to, chain) covering all time where a chain exists."""
    out = []
    categories = {p.category for p in tariff.profiles if p.tenant == tenant}
    for category in sorted(categories):
        rows = [p for p in tariff.profiles if p.tenant == tenant and p.category == category]
        by_subject: dict[str, list] = {}
        for row in rows:
            by_subject.setdefault(row.subject, []).append(row)
        breaks = sorted({r.activation for r in rows} | {FAR_FUTURE})
        for subject in sorted(set(by_subject) | {"*any"}):
            for start, end in zip(breaks, breaks[1:]):
                chain = _chain(by_subject, subject, start, 0)
                if chain:
                    out.append((category, subject, start.replace(tzinfo=None), end.replace(tzinfo=None), chain))
    return out


def compile_prefixes(tariff: Tariff) -> pd.DataFrame:
    """(rp_id, prefix, destination_id, dest_rank, tied): every destination a plan prices under each
    of its prefixes, ranked by the static tie-break (highest weight of its plan rows, then lowest
    id). `tied` marks the prefixes several destinations share: for those the rank only decides
    after the timing test at the event's instant (rating.md, step 2). Vectorised: no Python loop
    per prefix."""
    dest = pd.DataFrame([(d, p) for d, ps in tariff.destinations.items() for p in ps], columns=["destination_id", "prefix"])
    plan_rows = pd.DataFrame([(r.rp_id, r.dr_id, r.weight) for rows in tariff.rating_plans.values() for r in rows],
                             columns=["rp_id", "dr_id", "weight"])
    drs = pd.DataFrame([(d.dr_id, d.destination_id) for ds in tariff.destination_rates.values() for d in ds],
                       columns=["dr_id", "destination_id"])
    priced = plan_rows.merge(drs, on="dr_id").groupby(["rp_id", "destination_id"], as_index=False)["weight"].max()
    any_rows = priced[priced["destination_id"] == "*any"].assign(prefix="")
    with_prefix = priced.merge(dest, on="destination_id")
    both = pd.concat([with_prefix, any_rows], ignore_index=True).drop_duplicates(["rp_id", "prefix", "destination_id"])
    both = both.sort_values(["rp_id", "prefix", "weight", "destination_id"], ascending=[True, True, False, True])
    both["dest_rank"] = both.groupby(["rp_id", "prefix"]).cumcount().astype("int32")
    both["tied"] = both.groupby(["rp_id", "prefix"])["destination_id"].transform("size") > 1
    return both[["rp_id", "prefix", "destination_id", "dest_rank", "tied"]].reset_index(drop=True)


def compile_tie_timings(tariff: Tariff, prefixes: pd.DataFrame) -> list[tuple]:
    """(rp_id, destination_id, timings[]) for the destinations that share a prefix in a plan."""
    tied = set(map(tuple, prefixes.loc[prefixes["tied"], ["rp_id", "destination_id"]].drop_duplicates().to_numpy()))
    out: dict[tuple, list] = {}
    for rp_id, rows in tariff.rating_plans.items():
        for row in rows:
            timing = tariff.timings[row.timing_tag]
            for dr in tariff.destination_rates[row.dr_id]:
                if (rp_id, dr.destination_id) in tied:
                    out.setdefault((rp_id, dr.destination_id), []).append(
                        (list(timing.years), list(timing.months), list(timing.month_days), list(timing.week_days),
                         timing.time_s))
    return [(rp_id, dest_id, timings) for (rp_id, dest_id), timings in out.items()]


def _whole_seconds(value: Decimal, what: str) -> int:
    if value != value.to_integral_value():
        raise TariffError([f"Rates.csv: {what} {value}s is not a whole number of seconds (voice is rated per second)"])
    return int(value)


def compile_plan_rows(tariff: Tariff) -> list[tuple]:
    """(rp_id, destination_id, rows[]) with each row's timing, rounding and rate groups."""
    out = []
    for rp_id, plan_rows in tariff.rating_plans.items():
        by_dest: dict[str, list] = {}
        for row in plan_rows:
            timing = tariff.timings[row.timing_tag]
            for dr in tariff.destination_rates[row.dr_id]:
                groups = [(_whole_seconds(g.group_start.seconds, "GroupIntervalStart"), _whole_seconds(g.unit.seconds, "RateUnit") or 1,
                           _whole_seconds(g.increment.seconds, "RateIncrement") or 1,
                           g.group_start.units, g.unit.units, g.increment.units, g.connect_fee, g.rate)
                          for g in tariff.rates[dr.rates_tag]]
                by_dest.setdefault(dr.destination_id, []).append((
                    list(timing.years), list(timing.months), list(timing.month_days), list(timing.week_days),
                    timing.time_s, row.weight, -row.order, dr.dr_id, dr.rounding_method, dr.rounding_decimals,
                    dr.max_cost, dr.max_cost_strategy, groups))
        out += [(rp_id, dest_id, rows) for dest_id, rows in by_dest.items()]
    return out


class CompiledTariff:
    """The tariff as three small broadcast frames, built once per rating run."""

    def __init__(self, spark: SparkSession, tariff: Tariff, tenant: str):
        self.version = tariff.version
        segments = compile_segments(tariff, tenant)
        self.segments = spark.createDataFrame(segments, SEGMENTS)
        prefixes = compile_prefixes(tariff)
        self.prefixes = spark.createDataFrame(prefixes).select(
            F.col("rp_id").cast("string"), F.col("prefix").cast("string"), F.col("destination_id").cast("string"),
            F.col("dest_rank").cast("int"), F.col("tied").cast("boolean"))
        tie_timings = compile_tie_timings(tariff, prefixes)
        self.tie_timings = spark.createDataFrame(tie_timings, TIE_TIMINGS) if tie_timings else None
        self.plan_rows = spark.createDataFrame(compile_plan_rows(tariff), PLAN_ROWS)
        self.subjects = {}
        for category, subject, *_ in segments:
            self.subjects.setdefault(category, set()).add(subject)


# ---------------------------------------------------------------- rate (executors, vectorised)

def _subject(category: Column, plan_id: Column, subjects: dict[str, set]) -> Column:
    expr = F.lit("*any")
    for category_name, names in subjects.items():
        known = [n for n in names if n != "*any"]
        if known:
            expr = F.when((category == category_name) & plan_id.isin(*known), plan_id).otherwise(expr)
    return expr


def _prefixes(number: Column) -> Column:
    """'' (the *any destination) plus every leading substring of the number."""
    digits = F.coalesce(number, F.lit(""))
    return F.concat(F.array(F.lit("")),
                    F.when(F.length(digits) > 0, F.transform(F.sequence(F.lit(1), F.length(digits)),
                                                              lambda i: F.substring(digits, 1, i)))
                    .otherwise(F.array().cast("array<string>")))


def resolve_pieces(events: DataFrame, tariff: CompiledTariff, tz: str) -> DataFrame:
    """event_id -> pieces: (p_from, p_to, rp_id, destination_id, rows) per profile segment."""
    is_voice = F.col("category") == "call"
    ev = events.select("event_id", "category", "plan_id", "destination", "event_start", "usage").withColumn(
        "subject", _subject(F.col("category"), F.col("plan_id"), tariff.subjects)).withColumn(
        "span_end", F.when(is_voice & (F.col("usage") > 0),
                           F.timestamp_seconds(F.unix_seconds("event_start") + F.col("usage")))
        .otherwise(F.col("event_start") + F.expr("INTERVAL 1 MICROSECOND")))
    seg = F.broadcast(tariff.segments).alias("s")
    overlap = ((F.col("e.category") == F.col("s.category")) & (F.col("e.subject") == F.col("s.subject")) &
               (F.col("s.seg_from") < F.col("e.span_end")) & (F.col("s.seg_to") > F.col("e.event_start")))
    pieces = ev.alias("e").join(seg, overlap).select(
        "e.event_id", "e.destination", "e.usage", "e.event_start",
        F.greatest(F.lit(0).cast("long"), F.unix_seconds("s.seg_from") - F.unix_seconds("e.event_start")).alias("p_from"),
        F.when(F.col("e.category") == "call", F.least(F.col("e.usage"), F.unix_seconds("s.seg_to") - F.unix_seconds("e.event_start")))
        .otherwise(F.lit(2**62)).alias("p_to"),
        F.posexplode("s.chain").alias("chain_idx", "rp_id"))
    candidates = pieces.withColumn("prefix", F.explode(_prefixes(F.col("destination")))).join(
        F.broadcast(tariff.prefixes), ["rp_id", "prefix"])
    inactive = F.lit(False)
    if tariff.tie_timings is not None:
        # Destinations sharing the winning prefix: one with a plan row whose timing is active at the
        # piece's first instant beats one without, before weight and id (rating.md, step 2).
        candidates = candidates.join(F.broadcast(tariff.tie_timings), ["rp_id", "destination_id"], "left")
        piece_start = _local_parts(F.timestamp_seconds(F.unix_seconds("event_start") + F.col("p_from")), tz)
        inactive = F.when(F.col("tied"), ~F.exists(F.coalesce("timings", F.array().cast(ArrayType(TIMING))),
                                                   lambda r: _timing_active(r, piece_start))).otherwise(F.lit(False))
    best = candidates.groupBy("event_id", "p_from", "p_to").agg(
        F.min(F.struct(F.col("chain_idx"), (-F.length("prefix")).alias("neg_len"), inactive.alias("inactive"),
                       F.col("dest_rank"), F.col("rp_id"), F.col("destination_id"))).alias("best"))
    all_pieces = pieces.select("event_id", "p_from", "p_to").distinct()
    resolved = (all_pieces.join(best, ["event_id", "p_from", "p_to"], "left")
                .select("event_id", "p_from", "p_to", F.col("best.rp_id").alias("rp_id"),
                        F.col("best.destination_id").alias("destination_id"))
                .join(F.broadcast(tariff.plan_rows), ["rp_id", "destination_id"], "left"))
    return resolved.groupBy("event_id").agg(F.array_sort(F.collect_list(
        F.struct("p_from", "p_to", "rp_id", "destination_id", "rows"))).alias("pieces"))


def _local_parts(instant: Column, tz: str) -> dict[str, Column]:
    local = F.from_utc_timestamp(instant, tz)
    return {"year": F.year(local), "month": F.month(local), "day": F.dayofmonth(local),
            "weekday": ((F.dayofweek(local) + 5) % 7) + 1,
            "tod": F.hour(local) * 3600 + F.minute(local) * 60 + F.second(local)}


def _matches(values: Column, value: Column) -> Column:
    return (F.size(values) == 0) | F.array_contains(values, value)


def _timing_active(row: Column, t: dict[str, Column]) -> Column:
    """The row's timing matches the local date and its Time is at or before the time of day."""
    return (_matches(row.years, t["year"]) & _matches(row.months, t["month"]) & _matches(row.month_days, t["day"]) &
            _matches(row.week_days, t["weekday"]) & (row.time_s <= t["tod"]))


def _segment_at(offset: Column, pieces: Column, start: Column, is_voice: Column, tz: str) -> Column:
    """The rate in force for an increment starting `offset` units into the event."""
    piece = F.try_element_at(F.filter(pieces, lambda p: (p.p_from <= offset) & (offset < p.p_to)), F.lit(1))
    instant = F.when(is_voice, F.timestamp_seconds(F.unix_seconds(start) + offset)).otherwise(start)
    t = _local_parts(instant, tz)
    active = F.filter(piece.rows, lambda r: _timing_active(r, t))
    winner = F.array_max(F.transform(active, lambda r: F.struct(r.weight.alias("w"), r.time_s.alias("t"),
                                                                r.neg_order.alias("o"), r.alias("row")))).row
    group = F.try_element_at(F.filter(winner.groups, lambda g: F.when(is_voice, g.gis_s).otherwise(g.gis_u) <= offset), F.lit(-1))
    return F.struct(
        offset.alias("offset"), piece.isNotNull().alias("has_piece"), piece.rp_id.alias("rp_id"),
        piece.destination_id.alias("destination_id"), winner.isNotNull().alias("has_timing"),
        F.when(is_voice, group.inc_s).otherwise(group.inc_u).alias("inc"),
        F.when(is_voice, group.unit_s).otherwise(group.unit_u).alias("unit"),
        group.rate.alias("rate"), group.connect_fee.alias("connect_fee"), winner.dr_id.alias("dr_id"),
        winner.rounding_method.alias("method"), winner.rounding_decimals.alias("decimals"),
        winner.max_cost.alias("max_cost"), winner.max_cost_strategy.alias("strategy"))


def _boundaries(pieces: Column, start: Column, usage: Column, is_voice: Column, tz: str) -> Column:
    """Sorted offsets where the rate may change: 0, piece starts, group starts, and for voice the
    local instants of every timing start (and midnight) on each local day the call touches."""
    rows = F.flatten(F.transform(pieces, lambda p: F.coalesce(p.rows, F.array().cast(ArrayType(ROW)))))
    group_starts = F.flatten(F.transform(rows, lambda r: F.transform(
        r.groups, lambda g: F.when(is_voice, g.gis_s).otherwise(g.gis_u))))
    local_start = F.to_date(F.from_utc_timestamp(start, tz))
    local_end = F.to_date(F.from_utc_timestamp(F.timestamp_seconds(F.unix_seconds(start) + usage), tz))
    times = F.array_distinct(F.concat(F.array(F.lit(0)), F.transform(rows, lambda r: r.time_s)))
    timing_offsets = F.flatten(F.transform(F.sequence(local_start, local_end), lambda d: F.transform(
        times, lambda ts: F.unix_seconds(F.to_utc_timestamp(
            F.timestamp_seconds(F.unix_seconds(F.to_timestamp(d)) + ts), tz)) - F.unix_seconds(start))))
    voice_only = F.when(is_voice, timing_offsets).otherwise(F.array().cast("array<bigint>"))
    candidates = F.concat(F.array(F.lit(0).cast("long")), F.transform(pieces, lambda p: p.p_from),
                          group_starts.cast("array<bigint>"), voice_only.cast("array<bigint>"))
    return F.array_sort(F.array_distinct(F.filter(candidates, lambda o: (o >= 0) & ((o < usage) | (o == 0)))))


def _fold(segments: Column, usage: Column) -> Column:
    """Lay increments end to end: per constant-rate run, n = ceil((next - pos) / inc)."""
    nexts = F.concat(F.slice(F.transform(segments, lambda s: s.offset), 2, 1_000_000), F.array(usage))
    zipped = F.arrays_zip(segments.alias("seg"), nexts.alias("next"))
    zero = F.struct(F.lit(0).cast("long").alias("pos"), F.lit(0).cast(EXACT).alias("cost"),
                    F.lit(-1).alias("decimals"), F.lit(None).cast("string").alias("method"),
                    F.lit(None).cast(PRICE).alias("max_cost"), F.lit(None).cast("string").alias("strategy"),
                    F.lit(None).cast("string").alias("dr_id"))

    def step(acc, z):
        seg, nxt = z.seg, z.next
        n = F.when(acc.pos < nxt, F.floor((nxt - acc.pos + seg.inc - 1) / seg.inc)).otherwise(F.lit(0)).cast("long")
        charged = (n * seg.inc).cast(DecimalType(14, 0))
        run_cost = ((charged * seg.rate).cast(SEG_NUMERATOR) / seg.unit.cast(DIVISOR)).cast(EXACT)
        used = n > 0
        takes_rounding = used & (seg.decimals > acc.decimals)
        return F.struct(
            (acc.pos + n * seg.inc).alias("pos"), (acc.cost + run_cost).cast(EXACT).alias("cost"),
            F.when(takes_rounding, seg.decimals).otherwise(acc.decimals).alias("decimals"),
            F.when(takes_rounding, seg.method).otherwise(acc.method).alias("method"),
            F.when(takes_rounding, seg.max_cost).otherwise(acc.max_cost).alias("max_cost"),
            F.when(takes_rounding, seg.strategy).otherwise(acc.strategy).alias("strategy"),
            F.when(takes_rounding, seg.dr_id).otherwise(acc.dr_id).alias("dr_id"))

    return F.aggregate(zipped, zero, step)


def round_cost(exact: Column, method: Column, decimals: Column) -> Column:
    """Round once, per the DestinationRate: *up = ceiling, *down = floor, *middle = half up."""
    noise_free = F.bround(exact, 12)
    result = F.lit(None).cast(EXACT)
    for d in range(0, 11):
        by_method = (F.when(method == "*up", F.ceil(noise_free, d)).when(method == "*down", F.floor(noise_free, d))
                     .otherwise(F.round(noise_free, d)))
        result = F.when(decimals == d, by_method.cast(EXACT)).otherwise(result)
    return result


def rate_events(events: DataFrame, tariff: CompiledTariff, timezone_name: str) -> DataFrame:
    """Chargeable events -> cost columns, or a rating reason code. Pure transform."""
    pieces = resolve_pieces(events, tariff, timezone_name)
    is_voice = F.col("category") == "call"
    with_pieces = events.join(pieces, "event_id", "left").withColumn(
        "pieces", F.coalesce("pieces", F.array().cast(ArrayType(pieces.schema["pieces"].dataType.elementType))))
    bounds = _boundaries(F.col("pieces"), F.col("event_start"), F.col("usage"), is_voice, timezone_name)
    segments = F.transform(bounds, lambda o: _segment_at(o, F.col("pieces"), F.col("event_start"), is_voice, timezone_name))
    staged = with_pieces.withColumn("segments", segments).withColumn("fold", _fold(F.col("segments"), F.col("usage")))
    first = F.try_element_at(F.col("segments"), F.lit(1))
    covered = F.when(is_voice, F.aggregate(F.col("pieces"), F.lit(0).cast("long"), lambda acc, p: acc + (p.p_to - p.p_from))
                     >= F.col("usage")).otherwise(F.size("pieces") > 0)
    reason = (F.when(F.col("usage") == 0, F.lit(None))
              .when(~covered | F.exists("segments", lambda s: ~s.has_piece), F.lit(R.RATING_PLAN_NOT_FOUND))
              .when(F.exists("segments", lambda s: s.destination_id.isNull()), F.lit(R.UNAUTHORIZED_DESTINATION))
              .when(F.exists("segments", lambda s: ~s.has_timing), F.lit(R.NO_ACTIVE_TIMING)))
    fold = F.col("fold")
    total = (fold.cost + first.connect_fee.cast(EXACT)).cast(EXACT)
    capped = F.when((fold.max_cost > 0) & (fold.strategy == "*free"), F.least(total, fold.max_cost.cast(EXACT))).otherwise(total)
    exact = F.when(F.col("usage") == 0, F.lit(0).cast(EXACT)).otherwise(capped)
    cost = F.when(F.col("usage") == 0, F.lit(0).cast(EXACT)).otherwise(round_cost(capped, fold.method, fold.decimals))
    detail = F.concat_ws(" ", F.lit("category"), F.col("category"), F.lit("plan"), F.coalesce("plan_id", F.lit("?")),
                         F.lit("destination"), F.coalesce("destination", F.lit("*any")))
    return staged.select(
        *events.columns, reason.alias("rating_reason"), detail.alias("rating_detail"),
        first.destination_id.alias("destination_id"), first.rp_id.alias("rating_plan_id"),
        exact.alias("cost_exact"), cost.alias("cost_rounded"))
