"""Registers every Delta table of the warehouse as billing.<table> for SQL by name."""
from __future__ import annotations

from jobs.common.config import Config
from jobs.common.delta_io import table_exists

TABLES = {
    "bronze": ("file_manifest", "cdr_voice", "cdr_sms", "cdr_data", "cdr_asterisk", "traffic_measurements"),
    "silver": ("events", "quarantine", "duplicates", "partial_records", "record_keys", "subscribers",
               "traffic_measurements"),
    "gold": ("rated_events", "tariff_versions", "billing_rules", "invoices", "invoice_lines", "invoice_line_events",
             "tax_summary", "usage_assurance", "usage_assurance_daily"),
    "audit": ("pipeline_runs", "validation_results", "billing_exceptions", "published_days"),
}


def register_tables(spark, conf: Config, database: str = "billing") -> list[str]:
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    registered = []
    for layer, names in TABLES.items():
        for name in names:
            path = conf.table_path(layer, name)
            if table_exists(spark, path):
                spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW `{name}` AS SELECT * FROM delta.`{path}`")
                # external tables: dropping the catalog entry never touches the data, and a
                # long-lived session pointed at another warehouse must not keep the old location
                spark.sql(f"DROP TABLE IF EXISTS {database}.{name}")
                spark.sql(f"CREATE TABLE {database}.{name} USING DELTA LOCATION '{path}'")
                registered.append(f"{database}.{name}")
    return registered
