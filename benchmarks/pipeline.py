"""The whole daily pipeline at scale, stage by stage, against the floor of a bare CSV parse.

For each size N: generate one day of N events (the project's generator) and a tariff of about
50,000 destination prefixes, then in ONE warm session time session start, collect (CSV/XML ->
bronze), validate (incl. Great Expectations), rate, assure, bill; and two floors: Spark reading
the same CSV files with their full schema and counting (the bare parse), and reading back the
day's per-record tables (bronze, silver events and keys, gold rated events) and writing them again
as plain Delta tables (the copy floor). Reports events/s, events/s per core, end-to-end / floor
ratios, peak JVM and Python memory (RSS of this process tree, and each
executor's peak heap from Spark's metrics), shuffle spill (Spark's status API), the time spent
in Delta commits, and per stage the seconds Spark's tasks ran and the seconds only the driver
worked. Results: JSON + PNG chart.

    .venv/bin/python benchmarks/pipeline.py --events 1000000 [10000000 ...] [--master local[2]] [--out build/bench]
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common.config import PROJECT_ROOT, load_config  # noqa: E402
from schemas.landing import CDR_KINDS  # noqa: E402
from schemas.tables import BRONZE_TABLES  # noqa: E402

DAY = date(2026, 11, 4)                    # a Wednesday: peak and off-peak bands both in play
EXTRA_PREFIXES = 50_000
UI_PORT = 4077
TARGET_EVENTS_PER_S = 150_000              # issue 8: 10M events end to end on 2 cores


def write_tariff(folder: Path) -> int:
    """The default plan (bands, holidays, 60/60, 30/6, 1/1 increments) with ~50,000 more prefixes:
    longer numbers under its national and international destinations, so every price is realistic."""
    shutil.copytree(PROJECT_ROOT / "rating_rules" / "default", folder)
    with (folder / "Destinations.csv").open() as handle:
        rows = [r for r in csv.reader(handle) if r and not r[0].startswith("#")]
    bases = [(dest, prefix) for dest, prefix in rows if dest.startswith(("DST_DE_", "DST_INTL_"))]
    extra = []
    for i in range(EXTRA_PREFIXES):
        dest, prefix = bases[i % len(bases)]
        extra.append(f"{dest},{prefix}{i // len(bases):04d}")
    with (folder / "Destinations.csv").open("a") as handle:
        handle.write("\n".join(extra) + "\n")
    return len(rows) + len(extra)


class MemorySampler(threading.Thread):
    """Peak resident memory of this (driver) Python process and of its JVM, sampled every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.peak_python = self.peak_jvm = 0
        self.running = True

    def run(self):
        while self.running:
            try:
                self.peak_python = max(self.peak_python, self.me.memory_info().rss)
                jvm = sum(c.memory_info().rss for c in self.me.children(recursive=True) if "java" in c.name())
                self.peak_jvm = max(self.peak_jvm, jvm)
            except Exception:
                pass
            time.sleep(0.2)


def _status(app_id: str, what: str) -> list:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{UI_PORT}/api/v1/applications/{app_id}/{what}", timeout=10) as r:
            return json.loads(r.read())
    except OSError:
        return []


def spill_bytes(app_id: str, after_stage: int = -1) -> tuple[dict, int]:
    """Shuffle spill of the stages after `after_stage`, and the last stage's id."""
    stages = [s for s in _status(app_id, "stages") if s["stageId"] > after_stage]
    return ({"memory": sum(s.get("memoryBytesSpilled", 0) for s in stages),
             "disk": sum(s.get("diskBytesSpilled", 0) for s in stages)},
            max((s["stageId"] for s in stages), default=after_stage))


def covered_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals: overlapping tasks count once."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        covered += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return covered


def task_activity(app_id: str, after_stage: int) -> tuple[dict, int]:
    """What Spark's tasks did in the stages after `after_stage`: the seconds they ran (`task_s`;
    divided by the wall time, the cores kept busy on average) and the seconds at least one of them
    was running (`tasks_running_s`; the rest of the wall time only the driver worked, which more
    cores cannot shorten), and the last stage's id."""
    stages = [s for s in _status(app_id, "stages") if s["stageId"] > after_stage]
    intervals = []
    for stage in stages:
        if stage.get("numCompleteTasks") or stage.get("numActiveTasks"):
            tasks = _status(app_id, f"stages/{stage['stageId']}/{stage['attemptId']}/taskList?length=1000000")
            intervals += [(_seconds(t["launchTime"]), _seconds(t["launchTime"]) + t.get("duration", 0) / 1000)
                          for t in tasks if t.get("launchTime")]
    return ({"task_s": round(sum(s.get("executorRunTime", 0) for s in stages) / 1000, 1),
             "tasks_running_s": round(covered_seconds(intervals), 1)},
            max((s["stageId"] for s in stages), default=after_stage))


def executor_peaks_mb(app_id: str) -> dict:
    """Peak JVM heap and off-heap of every executor (and of the driver), from Spark's own metrics:
    on a cluster the executors are not this process's children, so the RSS sampler cannot see them."""
    peaks = {}
    for executor in _status(app_id, "allexecutors"):
        metrics = executor.get("peakMemoryMetrics") or {}
        peaks[executor["id"]] = {"heap": round(metrics.get("JVMHeapMemory", 0) / 2**20),
                                 "off_heap": round(metrics.get("JVMOffHeapMemory", 0) / 2**20),
                                 # time its tasks spent in garbage collection (a heap too small shows here)
                                 "task_gc_s": round(executor.get("totalGCTime", 0) / 1000, 1),
                                 "task_s": round(executor.get("totalDuration", 0) / 1000, 1)}
    return peaks


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def where_time_went(app_id: str, after_job: int, top: int = 10) -> tuple[int, list]:
    """Spark jobs run since `after_job`, wall seconds summed by call site (the profile of a stage)."""
    jobs = [j for j in _status(app_id, "jobs") if j["jobId"] > after_job and j.get("completionTime")]
    by_site: dict[str, float] = {}
    for job in jobs:
        site = job["name"].split(" at ")[-1] if " at " in job["name"] else job["name"]
        verb = job["name"].split(" at ")[0]
        key = f"{verb} at {site}"
        by_site[key] = by_site.get(key, 0.0) + _seconds(job["completionTime"]) - _seconds(job["submissionTime"])
    last = max([j["jobId"] for j in jobs], default=after_job)
    return last, [[site, round(sec, 1)] for site, sec in sorted(by_site.items(), key=lambda kv: -kv[1])[:top]]


def time_delta_commits(modules) -> dict:
    """Wrap the Delta writers each job module imported, adding their wall time to one counter."""
    spent = {"seconds": 0.0, "commits": 0}

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - started
                spent["commits"] += 1
        return wrapper

    for module in modules:
        for name in ("merge", "replace_where", "update_matched", "delete_matched", "append"):
            if hasattr(module, name) and callable(getattr(module, name)):
                setattr(module, name, timed(getattr(module, name)))
    return spent


def bare_parse(spark, landing: Path) -> tuple[float, int]:
    """The floor: Spark reads every CSV landing file with its full schema (all strings) and counts."""
    from pyspark.sql.types import StringType, StructField, StructType

    from schemas.landing import CDR_KINDS

    started = time.perf_counter()
    rows = 0
    for kind in CDR_KINDS:
        schema = StructType([StructField(c, StringType()) for c in kind.columns])
        frame = (spark.read.schema(schema).option("header", kind.has_header).option("mode", "PERMISSIVE")
                 .csv(str(landing / kind.folder)))
        # every column parsed and materialised (count() alone would prune them all away)
        frame.write.format("noop").mode("overwrite").save()
        rows += frame.count()
    return time.perf_counter() - started, rows


# The tables a day's records are written to, each holding one row per record or event, the column
# each is partitioned by, and the column holding the run's date where the table may hold earlier
# runs' rows too (the key index does, see --key-window-days): the I/O floor of a pipeline that keeps
# bronze, silver and gold.
COPIED_TABLES = (*[("bronze", BRONZE_TABLES[kind.name], "ingest_date", "ingest_date") for kind in CDR_KINDS],
                 ("silver", "events", "event_date", None), ("silver", "record_keys", "event_date", "key_date"),
                 ("gold", "rated_events", "event_date", None))


def copy_floor(spark, conf, scratch: Path, day: date) -> dict:
    """The second floor: read back what the run wrote to its per-record tables and write it again as
    plain Delta tables (one append each, no logic, no MERGE). No pipeline that keeps these layers
    can beat it on this machine, whatever its code does in between."""
    from jobs.common.delta_io import read_table, table_exists

    spent = {}
    for layer, table, partition, run_date in COPIED_TABLES:
        path = conf.table_path(layer, table)
        if not table_exists(spark, path):
            continue
        rows = read_table(spark, path)
        if run_date:
            rows = rows.where(rows[run_date] == day)
        started = time.perf_counter()
        rows.write.format("delta").mode("overwrite").partitionBy(partition).save(str(scratch / f"{layer}_{table}"))
        spent[f"{layer}/{table}"] = round(time.perf_counter() - started, 2)
    shutil.rmtree(scratch, ignore_errors=True)
    return spent


def prefill_key_window(spark, conf, day: date, keys_per_day: int, days: int) -> int:
    """`days` earlier days of `keys_per_day` record keys in `silver/record_keys`, none equal to the
    generated day's, each day's keys seen that day and dated that day: the index a day is judged
    against once the pipeline has run for that long, which a first day would otherwise not have."""
    from pyspark.sql import functions as F

    from schemas.tables import RECORD_KEYS

    kinds = F.array(*[F.lit(kind.name) for kind in CDR_KINDS])
    rows = spark.range(keys_per_day * days).select(
        F.element_at(kinds, (F.col("id") % F.size(kinds) + 1).cast("int")).alias("record_type"),
        F.concat(F.lit("EARLIER|"), F.col("id").cast("string")).alias("record_key"),
        F.concat(F.lit("cdr/earlier/f"), (F.col("id") % 1000).cast("string"), F.lit(".csv")).alias("source_file"),
        (F.col("id") + 2).alias("line_number"), F.lit("earlier-run").alias("run_id"),
        F.date_sub(F.lit(day), (F.col("id") / keys_per_day).cast("int") + 1).alias("key_date"))
    rows = rows.withColumn("event_date", F.col("key_date"))
    rows.select(*RECORD_KEYS.fieldNames()).write.format("delta").mode("append").partitionBy("event_date").save(
        conf.table_path("silver", "record_keys"))
    return keys_per_day * days


def run_size(n: int, master: str, work: Path, key_window_days: int = 0,
             spark_conf: dict[str, str] | None = None) -> dict:
    from jobs.generate.cdrs import GeneratorSettings, generate

    data = work / f"data_{n}"
    shutil.rmtree(data, ignore_errors=True)
    started = time.perf_counter()
    summary = generate(GeneratorSettings(out=data, seed=1, subscribers=max(200, n // 40), start=DAY, days=1,
                                         events_per_day=n))
    generate_s = time.perf_counter() - started
    prefixes = write_tariff(data / "rules")
    conf = load_config(overrides={
        "spark.master": master, "spark.shuffle_partitions": 8, "spark.driver_memory": "6g",
        "spark.extra_conf": {"spark.ui.enabled": "true", "spark.ui.port": str(UI_PORT),
                             # every stage kept for the spill and time accounting (default: 1,000)
                             "spark.ui.retainedStages": "100000", "spark.ui.retainedJobs": "100000",
                             # a cluster's Python workers (loopback standalone: this interpreter)
                             **({} if master.startswith("local") else
                                {"spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
                                 "spark.executor.memory": "5g"}),
                             **(spark_conf or {})},
        "paths.warehouse": str(data / "warehouse"), "paths.landing": str(data / "landing"),
        "paths.reference": str(data / "reference"), "paths.rules": str(data / "rules"),
        "paths.reports": str(data / "reports"),
        # one generated day carries ~1 % planted faults; the default thresholds apply
    }, environ={})
    sampler = MemorySampler()
    sampler.start()
    from jobs.common.spark import build_spark

    started = time.perf_counter()
    spark = build_spark(conf, app_name=f"cdr-billing-bench-{n}")
    session_s = time.perf_counter() - started

    from jobs import assure, bill, collect, rate, validate
    from jobs.common import audit

    prefilled = prefill_key_window(spark, conf, DAY, n, key_window_days) if key_window_days else 0
    commits = time_delta_commits([collect, validate, rate, assure, bill, audit])
    # warm-up: the first Spark job of a session pays class loading; the floor is timed warm too
    bare_parse(spark, data / "landing")
    bare_s, bare_rows = bare_parse(spark, data / "landing")
    stages, counts, profile = {}, {}, {}
    app_id = spark.sparkContext.applicationId
    mark, _ = where_time_went(app_id, -1)
    # the stages' spill only: writing a prefilled key window sorts 62 days of keys and spills itself
    _, before_stages = spill_bytes(app_id)
    stage_mark, activity = before_stages, {}
    for name, job, day in (("collect", collect.run, DAY), ("validate", validate.run, DAY), ("rate", rate.run, DAY),
                           ("assure", assure.run, DAY), ("bill", bill.run, DAY + timedelta(days=1))):
        started = time.perf_counter()
        try:
            record = job(spark, conf, day)
            counts[name] = {"in": record.records_in, "out": record.rated, "quarantined": record.quarantined}
        except Exception as exc:                    # a breach or a failure is a result too
            counts[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        stages[name] = round(time.perf_counter() - started, 2)
        mark, profile[name] = where_time_went(app_id, mark)
        activity[name], stage_mark = task_activity(app_id, stage_mark)
        print(f"{name}: {stages[name]:.1f}s  {counts[name]}", flush=True)
    spill, _ = spill_bytes(app_id, before_stages)
    copies = copy_floor(spark, conf, data / "copy_floor", DAY)
    copy_s = sum(copies.values())
    print(f"copy floor: {copy_s:.1f}s  {copies}", flush=True)
    executor_peaks = executor_peaks_mb(spark.sparkContext.applicationId)
    spark.stop()
    sampler.running = False
    sampler.join()
    pipeline_s = sum(stages[s] for s in ("collect", "validate", "rate", "bill"))
    cores = int(master[6:-1]) if master.startswith("local[") and master[6:-1].isdigit() else os.cpu_count()
    return {
        "events_requested": n, "records": sum(summary["records"].values()), "bare_parse_rows": bare_rows,
        "tariff_prefixes": prefixes, "generate_s": round(generate_s, 1), "session_start_s": round(session_s, 2),
        "bare_parse_s": round(bare_s, 2), "stages_s": stages, "counts": counts, "spark_jobs_by_call_site_s": profile,
        "end_to_end_s": round(pipeline_s, 2),
        "end_to_end_with_assure_s": round(pipeline_s + stages["assure"], 2),
        "events_per_s": round(n / pipeline_s), "events_per_s_per_core": round(n / pipeline_s / cores),
        "ratio_to_bare_parse": round(pipeline_s / bare_s, 1),
        "copy_floor_s": round(copy_s, 2), "copy_floor_by_table_s": copies,
        "ratio_to_copy_floor": round(pipeline_s / copy_s, 1) if copy_s else None,
        "peak_jvm_rss_mb": round(sampler.peak_jvm / 2**20), "peak_python_rss_mb": round(sampler.peak_python / 2**20),
        "task_s": {name: a["task_s"] for name, a in activity.items()},
        # below 1: the stage waited on the driver (planning, Delta's log, Python) more than it computed
        "cores_busy": {name: round(a["task_s"] / stages[name], 2) for name, a in activity.items() if stages[name]},
        # no task running: the driver alone (planning, Delta's log and commits, Python, collects)
        "driver_only_s": {name: round(max(0.0, stages[name] - a["tasks_running_s"]), 1)
                          for name, a in activity.items()},
        "peak_executor_memory_mb": executor_peaks, "shuffle_spill_bytes": spill,
        "delta_commit_s": round(commits["seconds"], 1), "delta_commits": commits["commits"],
        "cores": cores, "master": master, "key_window_days": key_window_days, "prefilled_keys": prefilled,
        "spark_conf": spark_conf or {},
    }


def machine() -> dict:
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    import psutil
    import pyspark

    return {"cpu_count": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "java": java, "spark": pyspark.__version__,
            "platform": platform.platform()}


def chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['events_requested']:,}" for r in results]
    bottom = [0.0] * len(results)
    for stage in ("collect", "validate", "rate", "bill", "assure"):
        values = [r["stages_s"][stage] for r in results]
        left.bar(labels, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    left.plot(labels, [r["bare_parse_s"] for r in results], "k_", markersize=40, label="bare CSV parse")
    left.plot(labels, [r.get("copy_floor_s", 0) for r in results], "r_", markersize=40, label="copy floor (tables rewritten)")
    left.set_ylabel("seconds")
    left.set_title("stage times (warm session)")
    left.legend(fontsize=8, loc="upper left")
    right.plot(labels, [r["events_per_s"] for r in results], "o-", label="pipeline")
    right.plot(labels, [r["records"] / r["bare_parse_s"] for r in results], "s--", label="bare parse")
    right.axhline(TARGET_EVENTS_PER_S, color="grey", linestyle=":", label=f"target {TARGET_EVENTS_PER_S:,}/s")
    right.set_yscale("log")
    right.set_ylabel("events / s (log)")
    right.set_title("throughput by size")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def spark_setting(item: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.startswith("spark."):
        parser.error(f"--conf wants spark.<key>=<value>, got {item!r}")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "bench")
    parser.add_argument("--keep-data", action="store_true", help="keep generated data and tables under --out")
    parser.add_argument("--key-window-days", type=int, default=0,
                        help="judge the day against this many earlier days of N keys each (steady state: 62)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Spark setting for the run, repeatable (a setting measured before it is adopted)")
    args = parser.parse_args()
    spark_conf = dict(spark_setting(item, parser) for item in args.conf)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.events:
        result = run_size(n, args.master, args.out, args.key_window_days, spark_conf)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
        if not args.keep_data:
            shutil.rmtree(args.out / f"data_{n}", ignore_errors=True)
    report = {"machine": machine(), "results": results}
    (args.out / "pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(results, args.out / "pipeline.png")
    print(f"wrote {args.out / 'pipeline.json'} and {args.out / 'pipeline.png'}")


if __name__ == "__main__":
    main()
