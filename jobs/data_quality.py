"""Batch-level validation with Great Expectations, from the same rules as the row-level checks.

One suite per record type, run once per run on the classified typed batch. Results go to
audit/validation_results (Delta) and to GX Data Docs HTML under <warehouse>/data_docs, so that
operations can open them. A breached `mostly` threshold is reported to the caller, which fails
the run only after everything it found is written.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timezone
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.common.config import Config
from jobs.common.delta_io import merge
from schemas.validation_rules import RULES, Rule, rules_for

RESULTS_SCHEMA = ("run_id string, logical_date date, record_type string, expectation string, column_name string, "
                  "reason_code string, success boolean, element_count long, unexpected_count long, "
                  "unexpected_percent double, mostly double, data_docs string, validated_at timestamp")

# Counts only, no sample of unexpected values: the samples would put raw calling numbers into the
# Data Docs HTML (the quarantine table keeps every bad record, with its reason, under the
# warehouse's access control), and fetching them cost a Spark job per expectation (41 a run).
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0}


class DataQualityError(RuntimeError):
    """A batch breached an expectation's `mostly` threshold."""


def expectation_for(rule: Rule, mostly: float, bounds: dict):
    import great_expectations as gx

    bound = lambda v: bounds[v] if isinstance(v, str) else v  # noqa: E731
    E = gx.expectations
    common = {"column": rule.column, "mostly": mostly, "meta": {"reason_code": rule.reason_code, "detail": rule.detail}}
    if rule.check == "null":
        return E.ExpectColumnValuesToBeNull(**common)
    if rule.check == "not_null":
        return E.ExpectColumnValuesToNotBeNull(**common)
    if rule.check == "regex":
        return E.ExpectColumnValuesToMatchRegex(regex=rule.regex, **common)
    if rule.check == "in_set":
        return E.ExpectColumnValuesToBeInSet(value_set=list(rule.value_set), **common)
    if rule.check == "between":
        return E.ExpectColumnValuesToBeBetween(min_value=bound(rule.min_value), max_value=bound(rule.max_value), **common)
    raise ValueError(f"unknown check {rule.check}")


def docs_dir(conf: Config) -> Path:
    return Path(conf.paths.warehouse.removeprefix("file:")) / "data_docs"


def _context(conf: Config):
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site("warehouse_docs", {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir(conf).resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    return context


def suite_input(batch: DataFrame) -> DataFrame:
    """The batch narrowed to the columns the suites check, plus record_type to split it by.

    The suites scan their input about five times per record type (one Spark job per level of
    GX's metric graph). The classified batch is a checkpoint of whole rows, raw record included,
    which no scan can prune: at 10M records those scans took 115 s. Narrowed and cached in Spark's
    columnar form, each scan reads only these columns."""
    return batch.select("record_type", *sorted({rule.column for rule in RULES}))


def validate_batches(spark: SparkSession, conf: Config, batch: DataFrame, bounds: dict, run_id: str,
                     logical_date: date) -> dict:
    """Run each record type's suite; store results; return {'failed': [...], 'docs': path}."""
    checked = suite_input(batch).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _validate(spark, conf, checked, bounds, run_id, logical_date)
    finally:
        checked.unpersist()


def _validate(spark: SparkSession, conf: Config, batch: DataFrame, bounds: dict, run_id: str,
              logical_date: date) -> dict:
    import great_expectations as gx

    context = _context(conf)
    # GX would persist each record type's slice itself (whole rows) and never release it
    source = context.data_sources.add_spark(name="silver_batch", persist=False)
    mostly = conf.validation.mostly
    rows, failed = [], []
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    index = docs_dir(conf) / "index.html"
    record_types = [r.record_type for r in batch.select("record_type").distinct().collect()]
    for record_type in sorted(record_types):
        suite = context.suites.add(gx.ExpectationSuite(name=f"{record_type}_records"))
        rules = rules_for(record_type)
        for rule in rules:
            suite.add_expectation(expectation_for(rule, mostly, bounds))
        asset = source.add_dataframe_asset(name=f"{record_type}_batch")
        definition = asset.add_batch_definition_whole_dataframe(f"{record_type}_{logical_date}")
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{record_type}_{run_id}", data=definition, suite=suite))
        result = validation.run(batch_parameters={"dataframe": batch.where(F.col("record_type") == record_type)},
                                result_format=RESULT_FORMAT)
        for outcome in result.results:
            config = outcome.expectation_config
            stats = outcome.result or {}
            name = f"{record_type}.{config.type}({config.kwargs.get('column')})"
            rows.append((run_id, logical_date, record_type, config.type, config.kwargs.get("column"),
                         (config.meta or {}).get("reason_code"), bool(outcome.success), stats.get("element_count"),
                         stats.get("unexpected_count"), stats.get("unexpected_percent"), mostly, str(index), now))
            if not outcome.success:
                failed.append(f"{name}: {stats.get('unexpected_percent', 0):.2f}% unexpected (mostly={mostly})")
    if rows:
        context.build_data_docs(site_names=["warehouse_docs"])
        merge(spark.createDataFrame(rows, RESULTS_SCHEMA), conf.table_path("audit", "validation_results"),
              ["run_id", "record_type", "expectation", "column_name", "reason_code"])
    return {"failed": failed, "docs": str(index), "expectations": len(rows)}
