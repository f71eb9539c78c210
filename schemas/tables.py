"""Delta table shapes, one place. Paths are <warehouse>/<layer>/<table>."""
from __future__ import annotations

from pyspark.sql.types import (
    ArrayType, BooleanType, DateType, DecimalType, IntegerType, LongType, MapType, StringType,
    StructField, StructType, TimestampType,
)

from schemas.landing import CDR_KINDS, TRAFFIC, LandingKind

# Money: rated costs keep >= 8 fractional digits (finance contract); the exact pre-rounding
# value keeps 18 so that any total can be re-derived.
COST = DecimalType(24, 10)
EXACT_COST = DecimalType(30, 18)
AMOUNT = DecimalType(20, 4)          # invoice money, already rounded to the currency's minor units (<= 4)
QUANTITY = DecimalType(30, 6)        # days, seconds, bytes, messages, or a tax line's base
RATE = DecimalType(18, 8)


def _fields(*pairs) -> StructType:
    return StructType([StructField(name, dtype, True) for name, dtype in pairs])


BRONZE_META = (
    ("source_file", StringType()),
    ("line_number", LongType()),
    ("raw_record", StringType()),
    ("parse_error", StringType()),
    ("run_id", StringType()),
    ("ingest_date", DateType()),
)


def bronze_schema(kind: LandingKind) -> StructType:
    return _fields(*[(c, StringType()) for c in kind.columns],
                   ("extra_columns", MapType(StringType(), StringType())), *BRONZE_META)


BRONZE_TABLES = {**{kind.name: f"cdr_{kind.name}" for kind in CDR_KINDS}, TRAFFIC.name: "traffic_measurements"}


def _xml_value() -> ArrayType:
    return ArrayType(StructType([StructField("_VALUE", StringType()), StructField("_p", StringType())]))


# What Spark's xml source reads from a measCollecFile (rowTag = the root): strings only, so
# bronze keeps values as written and a bad value is judged (and quarantined) downstream.
MEAS_COLLEC_FILE = StructType([StructField("measData", ArrayType(StructType([
    StructField("managedElement", StructType([StructField("_localDn", StringType())])),
    StructField("measInfo", ArrayType(StructType([
        StructField("_measInfoId", StringType()),
        StructField("granPeriod", StructType([StructField("_duration", StringType()), StructField("_endTime", StringType())])),
        StructField("measType", _xml_value()),
        StructField("measValue", ArrayType(StructType([
            StructField("_measObjLdn", StringType()), StructField("r", _xml_value()), StructField("suspect", StringType()),
        ]))),
    ]))),
])))])

TRAFFIC_MEASUREMENTS = _fields(
    ("object_type", StringType()), ("object_id", StringType()), ("managed_element", StringType()),
    ("meas_obj_ldn", StringType()), ("counter", StringType()), ("metric", StringType()),
    ("period_start", TimestampType()), ("period_end", TimestampType()), ("value", LongType()),
    ("suspect", BooleanType()), ("source_file", StringType()), ("line_number", LongType()),
    ("run_id", StringType()), ("ingest_date", DateType()),
)

USAGE_ASSURANCE = _fields(
    ("object_id", StringType()), ("object_type", StringType()), ("period_start", TimestampType()),
    ("metric", StringType()), ("network_value", LongType()), ("cdr_value", LongType()),
    ("difference", LongType()), ("difference_pct", DecimalType(12, 2)), ("status", StringType()),
    ("suspect", BooleanType()), ("settled", BooleanType()), ("local_date", DateType()), ("run_id", StringType()),
)

# Per object and local day: carried vs billed, and what the unbilled part is worth at the
# object's average rated price (one row per currency it was billed in).
USAGE_ASSURANCE_DAILY = _fields(
    ("local_date", DateType()), ("object_id", StringType()), ("object_type", StringType()), ("metric", StringType()),
    ("unit", StringType()), ("carried", LongType()), ("billed", LongType()), ("leakage", LongType()),
    ("leakage_pct", DecimalType(12, 2)), ("flagged_periods", LongType()), ("currency", StringType()),
    ("average_rate", DecimalType(30, 12)), ("leakage_value", AMOUNT), ("settled", BooleanType()), ("run_id", StringType()),
)

FILE_MANIFEST = _fields(
    ("path", StringType()), ("file_name", StringType()), ("kind", StringType()),
    ("size_bytes", LongType()), ("modified_at", TimestampType()), ("sha256", StringType()), ("record_count", LongType()),
    ("run_id", StringType()), ("logical_date", DateType()), ("ingested_at", TimestampType()),
    ("status", StringType()), ("reason_code", StringType()), ("reason_detail", StringType()),
)

QUARANTINE = _fields(
    ("quarantine_id", StringType()), ("record_type", StringType()), ("stage", StringType()),
    ("source_file", StringType()), ("line_number", LongType()), ("record_key", StringType()),
    ("raw_record", StringType()), ("event_json", StringType()),
    ("reason_code", StringType()), ("reason_detail", StringType()),
    ("first_seen_at", TimestampType()), ("last_attempt_at", TimestampType()), ("attempts", IntegerType()),
    ("status", StringType()), ("run_id", StringType()), ("logical_date", DateType()),
)

RECORD_KEYS = _fields(
    ("record_type", StringType()), ("record_key", StringType()), ("source_file", StringType()),
    ("line_number", LongType()), ("run_id", StringType()), ("key_date", DateType()), ("event_date", DateType()),
)

DUPLICATES = _fields(
    ("record_type", StringType()), ("record_key", StringType()), ("source_file", StringType()),
    ("line_number", LongType()), ("first_source_file", StringType()), ("first_line_number", LongType()),
    ("run_id", StringType()), ("logical_date", DateType()),
)

# One typed CDR record (a part of a call/session or a whole message), before assembly.
TYPED_RECORD = _fields(
    ("record_type", StringType()), ("record_key", StringType()), ("group_key", StringType()),
    ("sequence", IntegerType()), ("is_last_part", BooleanType()),
    ("source_file", StringType()), ("line_number", LongType()), ("raw_record", StringType()),
    ("served_msisdn", StringType()), ("destination", StringType()), ("event_start", TimestampType()),
    ("usage", LongType()), ("chargeable", BooleanType()), ("category", StringType()),
    ("msc_outgoing_tkgp", StringType()), ("apn", StringType()), ("serving_plmn", StringType()),
    ("first_seen_at", TimestampType()),
)

EVENTS = _fields(
    ("event_id", StringType()), ("record_type", StringType()), ("source_keys", ArrayType(StringType())),
    ("source_files", ArrayType(StringType())), ("served_msisdn", StringType()), ("destination", StringType()),
    ("event_start", TimestampType()), ("event_date", DateType()), ("usage", LongType()),
    ("usage_unit", StringType()), ("chargeable", BooleanType()), ("category", StringType()),
    ("account_id", StringType()), ("plan_id", StringType()), ("currency", StringType()),
    ("tax_region", StringType()), ("msc_outgoing_tkgp", StringType()), ("apn", StringType()),
    ("serving_plmn", StringType()), ("run_id", StringType()),
)

RATED_EVENTS = _fields(
    ("event_id", StringType()), ("record_type", StringType()), ("source_keys", ArrayType(StringType())),
    ("account_id", StringType()), ("event_start", TimestampType()), ("event_date", DateType()),
    ("usage", LongType()), ("usage_unit", StringType()), ("chargeable", BooleanType()),
    ("category", StringType()), ("destination_id", StringType()), ("rating_plan_id", StringType()),
    ("cost", COST), ("cost_exact", EXACT_COST), ("currency", StringType()),
    ("tariff_version", StringType()), ("rated_at", TimestampType()), ("run_id", StringType()),
)

PIPELINE_RUNS = _fields(
    ("run_id", StringType()), ("job", StringType()), ("logical_date", DateType()),
    ("records_in", LongType()), ("rated", LongType()), ("quarantined", LongType()),
    ("duplicates", LongType()), ("pending", LongType()),
    ("started_at", TimestampType()), ("finished_at", TimestampType()), ("status", StringType()),
    ("details", StringType()),
)

# One row per job and date being run right now (jobs/common/run_lock.py); empty when idle.
RUN_LOCKS = _fields(
    ("lock_key", StringType()), ("token", StringType()), ("host", StringType()), ("pid", IntegerType()),
    ("acquired_at", TimestampType()),
)

# One row per published logical date: the table versions downstream may pin, and the runs behind them.
PUBLISHED_DAYS = _fields(
    ("logical_date", DateType()), ("assured", BooleanType()), ("table_versions", StringType()),
    ("run_ids", StringType()), ("published_at", TimestampType()), ("run_id", StringType()),
)

# The subscriber rows a bill run read, as Delta, so that an invoice can be reproduced by time travel.
SUBSCRIBERS = _fields(
    ("account_id", StringType()), ("msisdn", StringType()), ("plan_id", StringType()),
    ("bill_cycle_day", IntegerType()), ("currency", StringType()), ("tax_region", StringType()),
    ("valid_from_at", TimestampType()), ("valid_to_at", TimestampType()),
)

# Plans/Bundles/Taxes of each tariff version, kept so a bill run can be recomputed later.
BILLING_RULES = _fields(("tariff_version", StringType()), ("rules_json", StringType()), ("loaded_at", TimestampType()))

INVOICES = _fields(
    ("invoice_id", StringType()), ("account_id", StringType()), ("run_date", DateType()),
    ("period_start", DateType()), ("period_end", DateType()), ("currency", StringType()), ("tax_region", StringType()),
    ("subtotal", AMOUNT), ("tax_total", AMOUNT), ("total", AMOUNT), ("line_count", IntegerType()),
    ("event_count", LongType()), ("issued_at", TimestampType()), ("bill_run_id", StringType()),
    ("tariff_version", StringType()), ("source_versions", StringType()),
)

INVOICE_LINES = _fields(
    ("invoice_id", StringType()), ("line_no", IntegerType()), ("line_type", StringType()), ("category", StringType()),
    ("description", StringType()), ("quantity", QUANTITY), ("unit", StringType()), ("amount", AMOUNT),
    ("currency", StringType()), ("destination_id", StringType()), ("bundle_id", StringType()),
    ("tax_name", StringType()), ("tax_rate", RATE), ("event_count", LongType()),
    ("account_id", StringType()), ("run_date", DateType()),
)

# Lineage: each chargeable rated event on exactly one invoice line (its usage or late-usage line);
# the part of it a bundle covered is recorded here too.
INVOICE_LINE_EVENTS = _fields(
    ("event_id", StringType()), ("invoice_id", StringType()), ("line_no", IntegerType()),
    ("account_id", StringType()), ("event_start", TimestampType()), ("cost", COST),
    ("bundle_id", StringType()), ("covered_units", LongType()), ("covered_value", COST), ("run_date", DateType()),
)

# Rerating an event that is already on an issued invoice: the difference goes on the next invoice.
ADJUSTMENTS = _fields(
    ("adjustment_id", StringType()), ("event_id", StringType()), ("account_id", StringType()),
    ("category", StringType()), ("destination_id", StringType()), ("event_start", TimestampType()),
    ("previous_cost", COST), ("new_cost", COST), ("amount", COST), ("currency", StringType()),
    ("previous_tariff_version", StringType()), ("tariff_version", StringType()),
    ("created_at", TimestampType()), ("run_id", StringType()),
)

INVOICE_LINE_ADJUSTMENTS = _fields(
    ("adjustment_id", StringType()), ("invoice_id", StringType()), ("line_no", IntegerType()),
    ("account_id", StringType()), ("run_date", DateType()),
)

TAX_SUMMARY = _fields(
    ("tax_region", StringType()), ("tax_name", StringType()), ("month", StringType()), ("currency", StringType()),
    ("taxable_base", AMOUNT), ("tax_amount", AMOUNT), ("invoice_count", LongType()),
)

BILLING_EXCEPTIONS = _fields(
    ("run_date", DateType()), ("account_id", StringType()), ("reason_code", StringType()),
    ("reason_detail", StringType()), ("bill_run_id", StringType()),
)

# Delta keeps per-file min/max statistics (which let a read skip files) only for the columns named
# here; by default it gathers them for a table's first 32 columns. On the wide per-record tables
# that was a third of their write time (1M rows, benchmark data: rated_events 6.5-7.6 s with
# every column, 4.9 s with three). Named: what reads filter on, joins by or MERGE on, beyond the
# partition columns. Tables not named keep Delta's default. An existing table is given this
# setting at its next write (delta_io.upgrade_properties); its files already written keep theirs.
STATS_COLUMNS = {
    **{f"bronze/{table}": ("source_file", "line_number") for table in BRONZE_TABLES.values()},
    # run_id: a day's rating reads only the files its day's validate runs wrote
    "silver/events": ("event_id", "account_id", "event_start", "run_id"),
    # key_date: a run's MERGE matches only its own run date's keys (a rerun's) and skips the rest
    "silver/record_keys": ("record_type", "record_key", "key_date"),
    "gold/rated_events": ("event_id", "account_id", "event_start", "run_id"),
    "gold/invoice_line_events": ("event_id", "invoice_id", "account_id"),
}

USAGE_UNITS = {"voice": "s", "asterisk": "s", "sms": "msg", "data": "bytes"}
