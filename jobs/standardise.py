"""Standardise: bronze strings -> one typed record per CDR line, every kind in one shape.

Pure transforms. Bad values become nulls here (try_* parsers, never an exception under ANSI
mode); validation turns them into reason codes.
"""
from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.config import OperatorSettings
from schemas.landing import DATA_PARTIAL_CAUSES, VOICE_PARTIAL_CAUSES

ISO_WITH_OFFSET = "yyyy-MM-dd'T'HH:mm:ss[.SSS]XXX"
ASTERISK_LOCAL = "yyyy-MM-dd HH:mm:ss"

NON_EMPTY = {
    "voice": ("record_type", "msc_id", "call_reference", "cause_for_term", "served_msisdn", "called_number",
              "seizure_time", "call_duration"),
    "sms": ("record_type", "smsc_id", "message_reference", "served_msisdn", "destination_number", "origination_time"),
    "data": ("pgw_address", "charging_id", "record_sequence_number", "cause_for_rec_closing", "served_msisdn",
             "serving_plmn", "record_opening_time", "data_volume_uplink", "data_volume_downlink"),
    "asterisk": ("src", "dst", "start", "billsec", "disposition"),
}


def blank_to_null(col: str) -> Column:
    return F.nullif(F.trim(F.col(col)), F.lit(""))


def iso_timestamp(col: str) -> Column:
    return F.try_to_timestamp(blank_to_null(col), F.lit(ISO_WITH_OFFSET))


def whole_number(col: str) -> Column:
    return F.expr(f"try_cast(nullif(trim(`{col}`), '') AS BIGINT)")


def all_timestamps_valid(parsed: dict[str, Column]) -> Column:
    """False when any timestamp field is present but unparseable: the record is then bad as a
    whole (BAD_TIMESTAMP), even if the field it is rated by happens to be fine."""
    ok = F.lit(True)
    for raw, value in parsed.items():
        ok = ok & (blank_to_null(raw).isNull() | value.isNotNull())
    return ok


def non_negative_sum(*parts: Column) -> Column:
    """Sum of volume counters; a negative counter is kept visible (NEGATIVE_USAGE), not netted."""
    return F.when(F.least(*parts) < 0, F.least(*parts)).otherwise(reduce(lambda a, b: a + b, parts))


def normalise_number(col: str, op: OperatorSettings) -> Column:
    """Dialled number -> E.164 digits without '+'; short codes stay as dialled.

    With normalise_numbers off the number is kept as recorded (minus formatting and a leading
    '+'), which plans written with national prefixes need.
    """
    cleaned = F.regexp_replace(F.trim(F.col(col)), r"[\s\-().]", "")
    no_plus = F.regexp_replace(cleaned, r"^\+", "")
    if not op.normalise_numbers:
        return F.nullif(no_plus, F.lit(""))
    intl, national = op.international_prefix, op.national_prefix
    result = (F.when(cleaned.startswith("+"), no_plus)
              .when(cleaned.startswith(intl), F.substring(cleaned, len(intl) + 1, 64)))
    if national:
        result = result.when(cleaned.startswith(national),
                             F.concat(F.lit(op.home_country_code), F.substring(cleaned, len(national) + 1, 64)))
    return F.nullif(result.otherwise(cleaned), F.lit(""))


def _missing(kind_name: str) -> Column:
    names = [F.when(blank_to_null(c).isNull(), F.lit(c)) for c in NON_EMPTY[kind_name]]
    return F.nullif(F.concat_ws(",", *names), F.lit(""))


def _common(kind_name: str) -> list[Column]:
    return [F.lit(kind_name).alias("record_type"), "source_file", "line_number", "raw_record", "parse_error",
            _missing(kind_name).alias("missing_field")]


def _key(*cols: Column) -> Column:
    return F.concat_ws("|", *[F.coalesce(c, F.lit("")) for c in cols])


def standardise_voice(bronze: DataFrame, op: OperatorSettings) -> DataFrame:
    seq = F.coalesce(F.expr("try_cast(nullif(trim(sequence_number), '') AS INT)"), F.lit(1))
    answered = blank_to_null("answer_time").isNotNull()
    rtype = blank_to_null("record_type")
    last = ~F.coalesce(F.trim("cause_for_term").isin(*VOICE_PARTIAL_CAUSES), F.lit(False))
    return bronze.select(
        *_common("voice"),
        rtype.alias("record_type_raw"), F.lit(None).cast("string").alias("disposition"),
        _key(F.trim("msc_id"), F.trim("call_reference"), seq.cast("string")).alias("record_key"),
        _key(F.trim("msc_id"), F.trim("call_reference")).alias("group_key"),
        seq.alias("sequence"), last.alias("is_last_part"),
        ((seq > 1) | ~last).alias("is_partial"),
        F.when(all_timestamps_valid({c: iso_timestamp(c) for c in ("seizure_time", "answer_time", "release_time")}),
               F.when(answered, iso_timestamp("answer_time")).otherwise(iso_timestamp("seizure_time"))).alias("event_start"),
        whole_number("call_duration").alias("usage"),
        (rtype.isin("MOC", "FWD") & answered).alias("chargeable"),
        F.lit("call").alias("category"),
        normalise_number("served_msisdn", op).alias("served_msisdn"),
        normalise_number("called_number", op).alias("destination"),
        blank_to_null("msc_outgoing_tkgp").alias("msc_outgoing_tkgp"),
        F.lit(None).cast("string").alias("apn"), F.lit(None).cast("string").alias("serving_plmn"),
    )


def standardise_sms(bronze: DataFrame, op: OperatorSettings) -> DataFrame:
    rtype = blank_to_null("record_type")
    delivered = F.coalesce(blank_to_null("sms_result"), F.lit("0")) == "0"
    key = _key(F.trim("smsc_id"), F.trim("message_reference"), F.trim("served_msisdn"))
    return bronze.select(
        *_common("sms"),
        rtype.alias("record_type_raw"), F.lit(None).cast("string").alias("disposition"),
        key.alias("record_key"), key.alias("group_key"), F.lit(1).alias("sequence"),
        F.lit(True).alias("is_last_part"), F.lit(False).alias("is_partial"),
        iso_timestamp("origination_time").alias("event_start"), F.lit(1).cast("bigint").alias("usage"),
        ((rtype == "MO_SMS") & delivered).alias("chargeable"), F.lit("sms").alias("category"),
        normalise_number("served_msisdn", op).alias("served_msisdn"),
        normalise_number("destination_number", op).alias("destination"),
        F.lit(None).cast("string").alias("msc_outgoing_tkgp"), F.lit(None).cast("string").alias("apn"),
        F.lit(None).cast("string").alias("serving_plmn"),
    )


def standardise_data(bronze: DataFrame, op: OperatorSettings) -> DataFrame:
    seq = F.expr("try_cast(nullif(trim(record_sequence_number), '') AS INT)")
    plmn = blank_to_null("serving_plmn")
    last = ~F.coalesce(F.trim("cause_for_rec_closing").isin(*DATA_PARTIAL_CAUSES), F.lit(False))
    roaming = plmn.isNotNull() & (plmn != F.lit(op.home_plmn))
    return bronze.select(
        *_common("data"),
        F.coalesce(blank_to_null("record_type"), F.lit("PGW")).alias("record_type_raw"),
        F.lit(None).cast("string").alias("disposition"),
        _key(F.trim("pgw_address"), F.trim("charging_id"), F.trim("record_sequence_number")).alias("record_key"),
        _key(F.trim("pgw_address"), F.trim("charging_id")).alias("group_key"),
        F.coalesce(seq, F.lit(1)).alias("sequence"), last.alias("is_last_part"),
        ((F.coalesce(seq, F.lit(1)) > 1) | ~last).alias("is_partial"),
        iso_timestamp("record_opening_time").alias("event_start"),
        non_negative_sum(whole_number("data_volume_uplink"), whole_number("data_volume_downlink")).alias("usage"),
        F.lit(True).alias("chargeable"),
        F.when(roaming, F.lit("data_roaming")).otherwise(F.lit("data")).alias("category"),
        normalise_number("served_msisdn", op).alias("served_msisdn"),
        F.when(roaming, plmn).alias("destination"),
        F.lit(None).cast("string").alias("msc_outgoing_tkgp"), blank_to_null("apn").alias("apn"),
        plmn.alias("serving_plmn"),
    )


def standardise_asterisk(bronze: DataFrame, op: OperatorSettings) -> DataFrame:
    def local(col: str) -> Column:
        return F.to_utc_timestamp(F.try_to_timestamp(blank_to_null(col), F.lit(ASTERISK_LOCAL)), op.pbx_timezone)

    disposition = F.upper(blank_to_null("disposition"))
    answered = disposition == "ANSWERED"
    key = F.coalesce(blank_to_null("uniqueid"), F.sha2(F.col("raw_record"), 256))
    return bronze.select(
        *_common("asterisk"),
        F.lit("ASTERISK").alias("record_type_raw"), disposition.alias("disposition"),
        key.alias("record_key"), key.alias("group_key"), F.lit(1).alias("sequence"),
        F.lit(True).alias("is_last_part"), F.lit(False).alias("is_partial"),
        F.when(all_timestamps_valid({c: local(c) for c in ("start", "answer", "end")}),
               F.when(answered & blank_to_null("answer").isNotNull(), local("answer")).otherwise(local("start")))
        .alias("event_start"),
        whole_number("billsec").alias("usage"), answered.alias("chargeable"), F.lit("call").alias("category"),
        normalise_number("src", op).alias("served_msisdn"), normalise_number("dst", op).alias("destination"),
        F.lit(None).cast("string").alias("msc_outgoing_tkgp"), F.lit(None).cast("string").alias("apn"),
        F.lit(None).cast("string").alias("serving_plmn"),
    )


STANDARDISERS = {"voice": standardise_voice, "sms": standardise_sms, "data": standardise_data,
                 "asterisk": standardise_asterisk}
