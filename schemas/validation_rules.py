"""The one declarative validation rule set.

Each rule drives both checks:
- row level: the first rule a record fails (in this order) is its quarantine reason;
- batch level: the same rule becomes a Great Expectations expectation with `mostly`
  (from configuration), run once per record type per run on the persisted typed batch.

Columns named here are those of the standardised frame (jobs/standardise.py).
Bounds named as strings (`max_call_duration_s`, ...) come from configuration at run time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from schemas import reason_codes as R

E164_DIGITS = r"^[0-9]{1,15}$"


@dataclass(frozen=True)
class Rule:
    reason_code: str
    check: str                       # null | not_null | between | regex | in_set
    column: str
    detail: str
    record_types: tuple[str, ...] = ("voice", "sms", "data", "asterisk")
    min_value: object = None
    max_value: object = None         # a number, or the name of a validation setting / run bound
    regex: str | None = None
    value_set: tuple = field(default=())


RULES: tuple[Rule, ...] = (
    Rule(R.MALFORMED_ROW, "null", "parse_error", "row could not be split into the file's columns"),
    Rule(R.MISSING_FIELD, "null", "missing_field", "a required field is empty"),
    Rule(R.BAD_VALUE, "in_set", "record_type_raw", "unknown record_type", record_types=("voice",),
         value_set=("MOC", "MTC", "FWD")),
    Rule(R.BAD_VALUE, "in_set", "record_type_raw", "unknown record_type", record_types=("sms",),
         value_set=("MO_SMS", "MT_SMS")),
    Rule(R.BAD_VALUE, "in_set", "disposition", "unknown disposition", record_types=("asterisk",),
         value_set=("ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION")),
    Rule(R.BAD_TIMESTAMP, "not_null", "event_start", "start time is not a valid timestamp"),
    Rule(R.FUTURE_TIMESTAMP, "between", "event_start", "start time is in the future", max_value="future_limit"),
    Rule(R.STALE_EVENT, "between", "event_start", "start time is older than validation.max_event_age_days",
         min_value="stale_before"),
    Rule(R.BAD_VALUE, "not_null", "usage", "usage is not a whole number"),
    Rule(R.NEGATIVE_USAGE, "between", "usage", "usage is negative", min_value=0),
    Rule(R.USAGE_TOO_LARGE, "between", "usage", "call longer than allowed", record_types=("voice", "asterisk"),
         max_value="max_call_duration_s"),
    Rule(R.USAGE_TOO_LARGE, "between", "usage", "data volume larger than allowed", record_types=("data",),
         max_value="max_data_volume_bytes"),
    Rule(R.BAD_NUMBER, "regex", "served_msisdn", "served number is not E.164 digits", regex=E164_DIGITS),
    Rule(R.BAD_NUMBER, "regex", "destination", "dialled number is not a valid number",
         record_types=("voice", "sms", "asterisk"), regex=E164_DIGITS),
    Rule(R.UNKNOWN_SUBSCRIBER, "not_null", "account_id", "no subscriber row valid at the event time"),
)


def rules_for(record_type: str) -> tuple[Rule, ...]:
    return tuple(rule for rule in RULES if record_type in rule.record_types)
