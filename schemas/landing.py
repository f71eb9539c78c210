"""Landing-zone layouts (../shared/spec/landing-formats.md): columns read by header name."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LandingKind:
    name: str                      # bronze table suffix and record_type in silver
    folder: str                    # below the landing root
    columns: tuple[str, ...]       # canonical order (the generator writes this order)
    required: tuple[str, ...]      # a file whose header lacks one is rejected whole
    key: tuple[str, ...]           # record key fields, in the spec's order
    has_header: bool = True
    optional_tail: tuple[str, ...] = ()  # headerless layouts: columns that may be absent


VOICE = LandingKind(
    name="voice",
    folder="cdr/voice",
    columns=(
        "record_type", "msc_id", "call_reference", "sequence_number", "cause_for_term",
        "served_imsi", "served_msisdn", "calling_number", "called_number",
        "seizure_time", "answer_time", "release_time", "call_duration",
        "msc_incoming_tkgp", "msc_outgoing_tkgp", "cell_id",
    ),
    required=(
        "record_type", "msc_id", "call_reference", "cause_for_term", "served_msisdn",
        "called_number", "answer_time", "seizure_time", "call_duration",
    ),
    key=("msc_id", "call_reference", "sequence_number"),
)

SMS = LandingKind(
    name="sms",
    folder="cdr/sms",
    columns=(
        "record_type", "smsc_id", "message_reference", "served_imsi", "served_msisdn",
        "destination_number", "origination_time", "sms_result", "cell_id",
    ),
    required=("record_type", "smsc_id", "message_reference", "served_msisdn", "destination_number", "origination_time"),
    key=("smsc_id", "message_reference", "served_msisdn"),
)

DATA = LandingKind(
    name="data",
    folder="cdr/data",
    columns=(
        "record_type", "pgw_address", "charging_id", "record_sequence_number", "cause_for_rec_closing",
        "served_imsi", "served_msisdn", "apn", "rat_type", "serving_plmn", "record_opening_time",
        "duration", "rating_group", "data_volume_uplink", "data_volume_downlink",
    ),
    required=(
        "pgw_address", "charging_id", "record_sequence_number", "cause_for_rec_closing", "served_msisdn",
        "serving_plmn", "record_opening_time", "data_volume_uplink", "data_volume_downlink",
    ),
    key=("pgw_address", "charging_id", "record_sequence_number"),
)

ASTERISK = LandingKind(
    name="asterisk",
    folder="cdr/asterisk",
    columns=(
        "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
        "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield",
    ),
    required=(),
    key=("uniqueid",),
    has_header=False,
    optional_tail=("uniqueid", "userfield"),
)

CDR_KINDS: tuple[LandingKind, ...] = (VOICE, SMS, DATA, ASTERISK)
KINDS_BY_NAME = {k.name: k for k in CDR_KINDS}
TRAFFIC_FOLDER = "traffic"

# TS 32.435 files: bronze keeps one row per counter value (measInfo x measValue x r), as strings.
TRAFFIC = LandingKind(
    name="traffic",
    folder=TRAFFIC_FOLDER,
    columns=("managed_element", "meas_info_id", "granularity_duration", "granularity_end", "meas_obj_ldn",
             "counter", "value", "suspect"),
    required=(),
    key=("meas_obj_ldn", "counter", "granularity_end"),
    has_header=False,
)
SUBSCRIBERS_FILE = "subscribers.csv"
SUBSCRIBER_COLUMNS = (
    "account_id", "msisdn", "imsi", "plan_id", "bill_cycle_day", "currency", "tax_region", "valid_from", "valid_to",
)

# Voice cause_for_term / data cause_for_rec_closing values that mean "more parts follow".
VOICE_PARTIAL_CAUSES = ("1",)
DATA_PARTIAL_CAUSES = ("16", "17", "18", "19", "20", "22")

# TS 32.435 measurements used for usage assurance: counter -> metric compared with the CDRs.
PERIOD_SECONDS = 900
METRIC_ANSWERED_CALLS = "answered_calls"
METRIC_CONVERSATION_SECONDS = "conversation_seconds"
METRIC_DATA_OCTETS = "data_octets"
COUNTER_METRICS = {
    "CALL.OutAnsweredCalls": METRIC_ANSWERED_CALLS,
    "CALL.OutConversationTime": METRIC_CONVERSATION_SECONDS,
    "DATA.VolumeUplinkOctets": METRIC_DATA_OCTETS,
    "DATA.VolumeDownlinkOctets": METRIC_DATA_OCTETS,
}
# measObjLdn forms: the last RDN names the object (trunk group id or APN).
TRUNK_LDN = "ManagedElement={element},TrunkGroup={object_id}"
APN_LDN = "ManagedElement={element},Apn={object_id}"
OBJECT_TYPES = {"TrunkGroup": "trunk_group", "Apn": "apn"}
