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
   Most events have one plan row in force from start to end (no Time, midnight or activation
   inside): `_single_run` costs those with the same formulas unrolled into plain expressions,
   which Spark compiles, where lambdas are interpreted element by element.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import reduce
from typing import ClassVar

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (ArrayType, BooleanType, DecimalType, DoubleType, IntegerType, LongType, StringType, StructField,
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
SUBJECT_SEGMENTS = StructType([
    StructField("seg_category", StringType()), StructField("seg_subject", StringType()),
    StructField("segments", ArrayType(StructType([
        StructField("seg_from", TimestampType()), StructField("seg_to", TimestampType()),
        StructField("chain_id", IntegerType())]))),
])
# `starts_s`/`starts_u`: the distinct group starts of all the rows (seconds / units), ascending;
# `times`: their distinct timing Times. What the single-run path reads instead of walking `rows`.
PLAN_ROWS = StructType([StructField("rp_id", StringType()), StructField("destination_id", StringType()),
                        StructField("plan", StructType([
                            StructField("rows", ArrayType(ROW)), StructField("starts_s", ArrayType(LongType())),
                            StructField("starts_u", ArrayType(LongType())), StructField("times", ArrayType(IntegerType()))]))])
CHAIN_PREFIXES = StructType([
    StructField("chain_id", IntegerType()), StructField("prefix", StringType()), StructField("chain_idx", IntegerType()),
    StructField("neg_len", IntegerType()), StructField("rp_id", StringType()), StructField("destination_id", StringType()),
    StructField("tied", BooleanType()),
])
TIMING = StructType([
    StructField("years", ArrayType(IntegerType())), StructField("months", ArrayType(IntegerType())),
    StructField("month_days", ArrayType(IntegerType())), StructField("week_days", ArrayType(IntegerType())),
    StructField("time_s", IntegerType()),
])
TIED_DESTINATIONS = StructType([
    StructField("rp_id", StringType()), StructField("prefix", StringType()),
    StructField("candidates", ArrayType(StructType([
        StructField("destination_id", StringType()), StructField("timings", ArrayType(TIMING))]))),
])


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


def _timing_fields(timing) -> tuple:
    """A Timings.csv row as the leading fields of TIMING (and of ROW)."""
    return list(timing.years), list(timing.months), list(timing.month_days), list(timing.week_days), timing.time_s


def compile_tied_destinations(tariff: Tariff, prefixes: pd.DataFrame) -> list[tuple]:
    """(rp_id, prefix, candidates[]) for each prefix several destinations of a plan share: the
    destinations in static rank order, each with the timings of its plan rows."""
    tied = prefixes[prefixes["tied"]]
    wanted = set(zip(tied["rp_id"], tied["destination_id"]))
    timings: dict[tuple, list] = {}
    for rp_id, rows in tariff.rating_plans.items():
        for row in rows:
            timing = tariff.timings[row.timing_tag]
            for dr in tariff.destination_rates[row.dr_id]:
                if (rp_id, dr.destination_id) in wanted:
                    timings.setdefault((rp_id, dr.destination_id), []).append(_timing_fields(timing))
    out: dict[tuple, list] = {}
    for rp_id, prefix, destination_id in tied.sort_values("dest_rank")[["rp_id", "prefix", "destination_id"]].itertuples(index=False):
        out.setdefault((rp_id, prefix), []).append((destination_id, timings.get((rp_id, destination_id), [])))
    return [(rp_id, prefix, candidates) for (rp_id, prefix), candidates in out.items()]


def compile_chain_prefixes(chains: list[tuple], prefixes: pd.DataFrame) -> pd.DataFrame:
    """(chain_id, prefix, chain_idx, neg_len, rp_id, destination_id, tied): for every fallback
    chain and every prefix any of its plans prices, the entry of the earliest plan in the chain
    (a later plan's entry for the same prefix can never win: the chain index decides first).
    One row per (chain, prefix): the static rank's first destination, `tied` when it shares the
    prefix with others (settled per event by the timing test)."""
    links = pd.DataFrame([(chain_id, idx, rp_id) for chain_id, chain in enumerate(chains) for idx, rp_id in enumerate(chain)],
                         columns=["chain_id", "chain_idx", "rp_id"])
    rows = links.merge(prefixes[prefixes["dest_rank"] == 0], on="rp_id")
    rows = rows[rows["chain_idx"] == rows.groupby(["chain_id", "prefix"])["chain_idx"].transform("min")]
    rows = rows.assign(neg_len=-rows["prefix"].str.len())
    return rows[["chain_id", "prefix", "chain_idx", "neg_len", "rp_id", "destination_id", "tied"]].reset_index(drop=True)


def _whole_seconds(value: Decimal, what: str) -> int:
    if value != value.to_integral_value():
        raise TariffError([f"Rates.csv: {what} {value}s is not a whole number of seconds (voice is rated per second)"])
    return int(value)


def compile_plan_rows(tariff: Tariff) -> list[tuple]:
    """(rp_id, destination_id, (rows[], starts_s, starts_u, times)): each row's timing, rounding and
    rate groups, and the group starts and Times of all of them."""
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
                    *_timing_fields(timing), row.weight, -row.order, dr.dr_id, dr.rounding_method, dr.rounding_decimals,
                    dr.max_cost, dr.max_cost_strategy, groups))
        out += [(rp_id, dest_id, (rows, sorted({g[0] for r in rows for g in r[-1]}), sorted({g[3] for r in rows for g in r[-1]}),
                                  sorted({r[4] for r in rows})))
                for dest_id, rows in by_dest.items()]
    return out


@contextmanager
def small_generated_methods(spark: SparkSession):
    """Run what is inside with whole-stage code generation given up for any method over 8,000 bytes
    of bytecode: HotSpot never JIT-compiles such a method and interprets it, and the rating stage's
    generated code (the single-run path unrolls the timing test per plan row) is that large.
    Spark then runs those operators with code of its own per operator, split into small methods.
    Measured on 1M benchmark events: rating 55 s as one huge method, 29 s split (general path 39 s)."""
    key = "spark.sql.codegen.hugeMethodLimit"
    previous = spark.conf.get(key)
    spark.conf.set(key, "8000")
    try:
        yield
    finally:
        spark.conf.set(key, previous)


@dataclass(frozen=True)
class PlanShape:
    """The largest plan of a tariff, in the sizes the single-run path unrolls its loops to."""
    rows: int
    groups: int
    starts: int
    times: int
    ties: bool                  # two rows of one plan alike in weight, Time and file order
    # beyond these the generated code would outgrow what it saves; such tariffs go the general way
    ROWS_LIMIT: ClassVar[int] = 64
    LIMIT: ClassVar[int] = 8

    @classmethod
    def of(cls, plan_rows: list[tuple]) -> "PlanShape":
        plans = [plan for *_, plan in plan_rows]
        return cls(rows=max((len(rows) for rows, *_ in plans), default=0),
                   groups=max((len(r[-1]) for rows, *_ in plans for r in rows), default=0),
                   starts=max((max(len(s), len(u)) for _, s, u, _ in plans), default=0),
                   times=max((len(t) for *_, t in plans), default=0),
                   ties=any(len({(r[4], r[5], r[6]) for r in rows}) < len(rows) for rows, *_ in plans))

    @property
    def unrollable(self) -> bool:
        return (not self.ties and 0 < self.rows <= self.ROWS_LIMIT
                and 0 < max(self.groups, self.starts, self.times) <= self.LIMIT)


class CompiledTariff:
    """The tariff as small broadcast frames, built once per rating run: each (category, subject)'s
    profile segments with the id of their fallback chain, each chain's prefixes (one lookup per
    prefix length, no shuffle), the destinations sharing a prefix, and each plan's rows."""

    def __init__(self, spark: SparkSession, tariff: Tariff, tenant: str):
        self.version = tariff.version
        segments = compile_segments(tariff, tenant)
        chains = list(dict.fromkeys(tuple(chain) for *_, chain in segments))
        by_subject: dict[tuple, list] = {}
        for category, subject, seg_from, seg_to, chain in segments:
            by_subject.setdefault((category, subject), []).append((seg_from, seg_to, chains.index(tuple(chain))))
        self.segments = spark.createDataFrame([(c, s, segs) for (c, s), segs in by_subject.items()], SUBJECT_SEGMENTS)
        # an event is split into pieces only where its subject's profile changes at an ActivationTime
        self.splits_events = any(len(segs) > 1 for segs in by_subject.values())
        prefixes = compile_prefixes(tariff)
        chain_prefixes = compile_chain_prefixes(chains, prefixes)
        self.prefix_lengths = sorted(set(-chain_prefixes["neg_len"]))
        # with its schema, not checked row by row: inferring it took ~4 s for the benchmark's 150,000 rows
        self.chain_prefixes = spark.createDataFrame(chain_prefixes, CHAIN_PREFIXES, verifySchema=False).select(
            "chain_id", "prefix", F.struct("chain_idx", "neg_len", "rp_id", "destination_id", "tied").alias("hit"))
        tied = compile_tied_destinations(tariff, prefixes)
        self.tied_destinations = spark.createDataFrame(tied, TIED_DESTINATIONS) if tied else None
        plan_rows = compile_plan_rows(tariff)
        self.plan_rows = spark.createDataFrame(plan_rows, PLAN_ROWS)
        self.shape = PlanShape.of(plan_rows)
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


def _lookup(frame: DataFrame, table: DataFrame, name: str, condition, value: str, alias: str) -> DataFrame:
    """Left broadcast join adding one column of a small table (its keys unique): no shuffle."""
    right = F.broadcast(table).alias(name)
    return frame.join(right, condition(lambda c: F.col(f"{name}.{c}")), "left").select(
        *[F.col(f"`{c}`") for c in frame.columns], F.col(f"{name}.{value}").alias(alias))


def attach_pieces(events: DataFrame, tariff: CompiledTariff, tz: str) -> DataFrame:
    """events + `pieces`: (p_from, p_to, rp_id, destination_id, rows) per profile segment the
    event overlaps, sorted by p_from (empty: no rating profile).

    All lookups are broadcast joins on the event's row; only events crossing an ActivationTime
    (several pieces, rare) are regrouped through a shuffle, and only for a tariff that has one."""
    columns = events.columns
    is_voice = F.col("category") == "call"
    start, usage = F.col("event_start"), F.col("usage")
    span_end = F.when(is_voice & (usage > 0), F.timestamp_seconds(F.unix_seconds(start) + usage)).otherwise(
        start + F.expr("INTERVAL 1 MICROSECOND"))
    framed = events.withColumn("_subject", _subject(F.col("category"), F.col("plan_id"), tariff.subjects))
    framed = _lookup(framed, tariff.segments, "_seg",
                     lambda r: (F.col("category") == r("seg_category")) & (F.col("_subject") == r("seg_subject")),
                     "segments", "_segments")
    overlapping = F.filter(F.col("_segments"), lambda g: (g.seg_from < span_end) & (g.seg_to > start))
    raw = F.transform(overlapping, lambda g: F.struct(
        F.greatest(F.lit(0).cast("long"), F.unix_seconds(g.seg_from) - F.unix_seconds(start)).alias("p_from"),
        F.when(is_voice, F.least(usage, F.unix_seconds(g.seg_to) - F.unix_seconds(start)))
        .otherwise(F.lit(2**62)).alias("p_to"),
        g.chain_id.alias("chain_id")))
    framed = framed.withColumn("_raw", raw).select(
        # size() of a missing array is NULL under ANSI: 0, or the event would match neither branch below
        *columns, F.coalesce(F.size("_raw"), F.lit(0)).alias("_n_pieces"), F.explode_outer("_raw").alias("_piece"))

    number = F.coalesce(F.col("destination"), F.lit(""))
    for length in tariff.prefix_lengths:
        key = F.when(F.length(number) >= length, F.substring(number, 1, length)) if length else F.lit("")
        framed = _lookup(framed, tariff.chain_prefixes, f"_p{length}",
                         lambda r, key=key: (F.col("_piece.chain_id") == r("chain_id")) & (key == r("prefix")),
                         "hit", f"_hit{length}")
    hits = [F.col(f"_hit{length}") for length in tariff.prefix_lengths]
    # lowest chain index, then longest prefix (structs compare field by field)
    no_hit = F.lit(None).cast(tariff.chain_prefixes.schema["hit"].dataType)
    framed = framed.withColumn("_hit", F.least(*hits) if len(hits) > 1 else hits[0] if hits else no_hit)
    destination = F.col("_hit.destination_id")
    if tariff.tied_destinations is not None:
        # Destinations sharing the winning prefix: one with a plan row whose timing is active at the
        # piece's first instant beats one without, before weight and id (rating.md, step 2).
        framed = _lookup(framed, tariff.tied_destinations, "_tie",
                         lambda r: (F.col("_hit.rp_id") == r("rp_id"))
                         & (F.substring(number, 1, -F.col("_hit.neg_len")) == r("prefix")),
                         "candidates", "_tied")
        piece_start = _local_parts(F.timestamp_seconds(F.unix_seconds(start) + F.col("_piece.p_from")), tz)
        active = F.filter("_tied", lambda c: F.exists(
            c.timings, lambda t: _timing_active(t, piece_start)))
        destination = F.when(F.col("_hit.tied"), F.coalesce(F.try_element_at(active, F.lit(1)),
                                                            F.try_element_at("_tied", F.lit(1))).destination_id
                             ).otherwise(destination)
    framed = framed.withColumn("_rp_id", F.col("_hit.rp_id")).withColumn("_destination_id", destination)
    framed = _lookup(framed, tariff.plan_rows, "_rows",
                     lambda r: (F.col("_rp_id") == r("rp_id")) & (F.col("_destination_id") == r("destination_id")),
                     "plan", "_plan")
    piece = F.struct(F.col("_piece.p_from").alias("p_from"), F.col("_piece.p_to").alias("p_to"),
                     F.col("_rp_id").alias("rp_id"), F.col("_destination_id").alias("destination_id"),
                     F.col("_plan.rows").alias("rows"), F.col("_plan.starts_s").alias("starts_s"),
                     F.col("_plan.starts_u").alias("starts_u"), F.col("_plan.times").alias("times"))
    single = framed.where(F.col("_n_pieces") <= 1).select(
        *columns, F.filter(F.array(F.when(F.col("_piece").isNotNull(), piece)), lambda p: p.isNotNull()).alias("pieces"))
    if not tariff.splits_events:
        # no event can have several pieces: regrouping them would read and price-look-up every
        # event a second time to find none (warm 1M-event pricing: 22.7 s with it, 17.9 s without)
        return single
    several = framed.where(F.col("_n_pieces") > 1).groupBy("event_id").agg(
        *[F.first(c).alias(c) for c in columns if c != "event_id"],
        F.array_sort(F.collect_list(piece)).alias("pieces"))
    return single.unionByName(several)


def _local_parts(instant: Column, tz: str) -> dict[str, Column]:
    return _parts_of_local(F.from_utc_timestamp(instant, tz))


def _parts_of_local(local: Column) -> dict[str, Column]:
    return {"year": F.year(local), "month": F.month(local), "day": F.dayofmonth(local),
            "weekday": ((F.dayofweek(local) + 5) % 7) + 1,
            "tod": F.hour(local) * 3600 + F.minute(local) * 60 + F.second(local)}


def _matches(values: Column, value: Column) -> Column:
    return (F.size(values) == 0) | F.array_contains(values, value)


def _timing_active(row: Column, t) -> Column:
    """The row's timing matches the local date and its Time is at or before the time of day."""
    return (_matches(row.years, t["year"]) & _matches(row.months, t["month"]) & _matches(row.month_days, t["day"]) &
            _matches(row.week_days, t["weekday"]) & (row.time_s <= t["tod"]))


def _segments_at(offsets: Column, pieces: Column, start: Column, is_voice: Column, tz: str) -> Column:
    """The rate in force for the increments starting at each offset (units into the event).

    Built as a chain of transforms, one per intermediate value: Spark evaluates a lambda's body
    without common-subexpression elimination, so a value read several times (the piece, the
    local time, the winning row, its rate group) is materialised once in its own pass rather
    than recomputed at every reference (this cut the stage's rating time by ~4x)."""
    located = F.transform(offsets, lambda o: F.struct(
        o.alias("offset"),
        F.try_element_at(F.filter(pieces, lambda p: (p.p_from <= o) & (o < p.p_to)), F.lit(1)).alias("piece"),
        F.from_utc_timestamp(F.when(is_voice, F.timestamp_seconds(F.unix_seconds(start) + o)).otherwise(start),
                             tz).alias("local")))
    timed = F.transform(located, lambda s: F.struct(
        s.offset.alias("offset"), s.piece.alias("piece"),
        F.struct(*[v.alias(k) for k, v in _parts_of_local(s.local).items()]).alias("t")))
    chosen = F.transform(timed, lambda s: F.struct(
        s.offset.alias("offset"), s.piece.alias("piece"),
        F.array_max(F.transform(F.filter(s.piece.rows, lambda r: _timing_active(r, s.t)),
                                lambda r: F.struct(r.weight.alias("w"), r.time_s.alias("t"), r.neg_order.alias("o"),
                                                   r.alias("row")))).row.alias("winner")))
    grouped = F.transform(chosen, lambda s: F.struct(
        s.offset.alias("offset"), s.piece.alias("piece"), s.winner.alias("winner"),
        F.try_element_at(F.filter(s.winner.groups, lambda g: F.when(is_voice, g.gis_s).otherwise(g.gis_u) <= s.offset),
                         F.lit(-1)).alias("group")))
    return F.transform(grouped, lambda s: F.struct(
        s.offset.alias("offset"), s.piece.isNotNull().alias("has_piece"), s.piece.rp_id.alias("rp_id"),
        s.piece.destination_id.alias("destination_id"), s.winner.isNotNull().alias("has_timing"),
        F.when(is_voice, s.group.inc_s).otherwise(s.group.inc_u).alias("inc"),
        F.when(is_voice, s.group.unit_s).otherwise(s.group.unit_u).alias("unit"),
        s.group.rate.alias("rate"), s.group.connect_fee.alias("connect_fee"), s.winner.dr_id.alias("dr_id"),
        s.winner.rounding_method.alias("method"), s.winner.rounding_decimals.alias("decimals"),
        s.winner.max_cost.alias("max_cost"), s.winner.max_cost_strategy.alias("strategy")))


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


def _increments(pos: Column, until: Column, inc: Column) -> Column:
    """How many increments of `inc` lay from `pos` reach `until` (0 when already there)."""
    return F.when(pos < until, F.floor((until - pos + inc - 1) / inc)).otherwise(F.lit(0)).cast("long")


def _run_cost(n: Column, inc: Column, rate: Column, unit: Column) -> Column:
    """n increments at `rate` per `unit`: one division, exact to 18 digits."""
    charged = (n * inc).cast(DecimalType(14, 0))
    return ((charged * rate).cast(SEG_NUMERATOR) / unit.cast(DIVISOR)).cast(EXACT)


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
        n = _increments(acc.pos, nxt, seg.inc)
        run_cost = _run_cost(n, seg.inc, seg.rate, seg.unit)
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


def _timing_active_sql(row: str, t: str) -> str:
    """`_timing_active` as SQL text, for a row and local-time struct named by expressions."""
    matches = [f"(size({row}.{values}) = 0 OR array_contains({row}.{values}, {t}.{part}))"
               for values, part in (("years", "year"), ("months", "month"), ("month_days", "day"), ("week_days", "weekday"))]
    return "(" + " AND ".join([*matches, f"{row}.time_s <= {t}.tod"]) + ")"


def _single_run(frame: DataFrame, shape: PlanShape, tz: str) -> DataFrame:
    """frame + `_single` and, where it is true, `_run`: the event's cost terms computed without a
    lambda, so that Spark generates code for them (lambdas are interpreted, one call per element).

    `_single` marks the common case: one profile piece covering the whole usage, and (voice) no
    timing Time, local midnight or DST change inside the call, so that one plan row is in force
    throughout and the rate changes only at its group starts. Those boundaries are then the plan's
    distinct group starts below the usage (ascending, at most `shape.starts`); each run is costed
    by the same formulas as `_fold`. Every other event keeps `_single` false and goes the general
    way; both ways give the same result (tests/test_rating.py compares them)."""
    is_voice = F.col("category") == "call"
    start, usage = F.col("event_start"), F.col("usage")
    piece, winner, single = F.col("_p"), F.col("_w"), F.col("_single")
    frame = frame.withColumns({
        "_p": F.try_element_at(F.col("pieces"), F.lit(1)),
        "_t0": F.struct(*[part.alias(name) for name, part in _parts_of_local(F.from_utc_timestamp(
            F.when(is_voice, F.timestamp_seconds(F.unix_seconds(start))).otherwise(start), tz)).items()])})
    # ranked as `_segments_at` ranks them; the position stands in for the row itself, which only
    # broke ties that `PlanShape.unrollable` rules out (and would make the generated code huge)
    # (SQL text: as Column calls, each a round trip to the JVM, building this took seconds)
    ranked = [f"CASE WHEN {_timing_active_sql(row, '_t0')} THEN named_struct("
              f"'w', {row}.weight, 't', {row}.time_s, 'o', {row}.neg_order, 'i', {i}) END"
              for i, row in ((i, f"try_element_at(_p.rows, {i})") for i in range(1, shape.rows + 1))]
    best = f"greatest({', '.join(ranked)})" if len(ranked) > 1 else ranked[0]
    frame = frame.withColumn("_w", F.expr(f"try_element_at(_p.rows, ({best}).i)"))

    def group_at(offset: Column) -> Column:
        groups = [F.try_element_at(winner.groups, F.lit(j)) for j in range(shape.groups, 0, -1)]
        return F.coalesce(*[F.when(F.when(is_voice, g.gis_s).otherwise(g.gis_u) <= offset, g) for g in groups])

    end = F.timestamp_seconds(F.unix_seconds(start) + usage)
    local_day = F.to_date(F.from_utc_timestamp(start, tz))
    zone_offset = lambda instant: F.unix_seconds(F.from_utc_timestamp(instant, tz)) - F.unix_seconds(instant)  # noqa: E731
    times = [F.lit(0)] + [F.try_element_at(piece.times, F.lit(i)) for i in range(1, shape.times + 1)]
    # each Time's instant on the call's local day, computed as `_boundaries` does
    inside = [F.coalesce((o > 0) & (o < usage), F.lit(False)) for o in (
        F.unix_seconds(F.to_utc_timestamp(F.timestamp_seconds(F.unix_seconds(F.to_timestamp(local_day)) + t), tz))
        - F.unix_seconds(start) for t in times)]
    steady = ((local_day == F.to_date(F.from_utc_timestamp(end, tz))) & (zone_offset(start) == zone_offset(end))
              & ~reduce(Column.__or__, inside))
    zero = F.lit(0).cast("long")
    frame = frame.withColumns({"_single": F.coalesce(
        (usage > 0) & (F.size("pieces") == 1) & piece.rows.isNotNull() & piece.destination_id.isNotNull()
        & (piece.p_from == 0) & (~is_voice | ((piece.p_to >= usage) & steady))
        & winner.isNotNull() & group_at(zero).isNotNull(), F.lit(False)), "_pos": zero})

    # the runs start at 0 and at each group start below the usage (ascending: the ones kept are adjacent)
    starts = F.when(is_voice, piece.starts_s).otherwise(piece.starts_u)
    later = [F.try_element_at(starts, F.lit(i)) for i in range(1, shape.starts + 1)]
    later = [F.when((s > 0) & (s < usage), s) for s in later]
    run_starts = [zero] + later
    frame = frame.withColumns({f"_g{k}": F.when(single & run_start.isNotNull(), group_at(run_start))
                               for k, run_start in enumerate(run_starts)})
    runs = []
    for k in range(len(run_starts)):
        group = F.col(f"_g{k}")
        inc = F.when(is_voice, group.inc_s).otherwise(group.inc_u)
        n = F.coalesce(_increments(F.col("_pos"), F.coalesce(*later[k:], usage), inc), zero)
        frame = frame.withColumns({f"_n{k}": n, "_pos": F.col("_pos") + F.when(n > 0, n * inc).otherwise(zero)})
        runs.append((F.col(f"_n{k}"), inc, group.rate, F.when(is_voice, group.unit_s).otherwise(group.unit_u)))
    cost = reduce(lambda total, run: (total + F.when(run[0] > 0, _run_cost(*run)).otherwise(F.lit(0).cast(EXACT))).cast(EXACT),
                  runs, F.lit(0).cast(EXACT))
    # the first run always has increments, so it sets the rounding, as in `_fold`
    takes = winner.rounding_decimals > -1
    return frame.withColumn("_run", F.when(single, F.struct(
        (cost + F.col("_g0").connect_fee.cast(EXACT)).cast(EXACT).alias("total"),
        F.when(takes, winner.rounding_decimals).otherwise(F.lit(-1)).alias("decimals"),
        F.when(takes, winner.rounding_method).alias("method"), F.when(takes, winner.max_cost).alias("max_cost"),
        F.when(takes, winner.max_cost_strategy).alias("strategy"),
        piece.destination_id.alias("destination_id"), piece.rp_id.alias("rp_id"))))


def rate_events(events: DataFrame, tariff: CompiledTariff, timezone_name: str, single_run: bool = True) -> DataFrame:
    """Chargeable events -> cost columns, or a rating reason code. Pure transform.

    `single_run=False` sends every event the general way (for tests that compare the two)."""
    is_voice = F.col("category") == "call"
    with_pieces = attach_pieces(events, tariff, timezone_name)
    fast = single_run and tariff.shape.unrollable
    if fast:
        with_pieces = _single_run(with_pieces, tariff.shape, timezone_name)
    single, general = (F.col("_single"), ~F.col("_single")) if fast else (F.lit(False), F.lit(True))
    run = F.col("_run")
    pick = (lambda one_run, otherwise: F.when(single, one_run).otherwise(otherwise)) if fast else (lambda _, otherwise: otherwise)
    bounds = _boundaries(F.col("pieces"), F.col("event_start"), F.col("usage"), is_voice, timezone_name)
    segments = _segments_at(bounds, F.col("pieces"), F.col("event_start"), is_voice, timezone_name)
    staged = (with_pieces.withColumn("segments", F.when(general, segments))
              .withColumn("fold", F.when(general, _fold(F.col("segments"), F.col("usage")))))
    first = F.try_element_at(F.col("segments"), F.lit(1))
    covered = F.when(is_voice, F.aggregate(F.col("pieces"), F.lit(0).cast("long"), lambda acc, p: acc + (p.p_to - p.p_from))
                     >= F.col("usage")).otherwise(F.size("pieces") > 0)
    reason = (F.when((F.col("usage") == 0) | single, F.lit(None))
              .when(~covered | F.exists("segments", lambda s: ~s.has_piece), F.lit(R.RATING_PLAN_NOT_FOUND))
              .when(F.exists("segments", lambda s: s.destination_id.isNull()), F.lit(R.UNAUTHORIZED_DESTINATION))
              .when(F.exists("segments", lambda s: ~s.has_timing), F.lit(R.NO_ACTIVE_TIMING)))
    fold = F.col("fold")
    total = pick(run.total, (fold.cost + first.connect_fee.cast(EXACT)).cast(EXACT))
    max_cost, strategy = pick(run.max_cost, fold.max_cost), pick(run.strategy, fold.strategy)
    capped = F.when((max_cost > 0) & (strategy == "*free"), F.least(total, max_cost.cast(EXACT))).otherwise(total)
    rounded = round_cost(capped, pick(run.method, fold.method), pick(run.decimals, fold.decimals))
    exact = F.when(F.col("usage") == 0, F.lit(0).cast(EXACT)).otherwise(capped)
    cost = F.when(F.col("usage") == 0, F.lit(0).cast(EXACT)).otherwise(rounded)
    detail = F.concat_ws(" ", F.lit("category"), F.col("category"), F.lit("plan"), F.coalesce("plan_id", F.lit("?")),
                         F.lit("destination"), F.coalesce("destination", F.lit("*any")))
    return staged.select(
        *events.columns, reason.alias("rating_reason"), detail.alias("rating_detail"),
        pick(run.destination_id, first.destination_id).alias("destination_id"),
        pick(run.rp_id, first.rp_id).alias("rating_plan_id"),
        exact.alias("cost_exact"), cost.alias("cost_rounded"))
