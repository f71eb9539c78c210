"""The one typed configuration model, loaded once and passed down.

Precedence (lowest first): the YAML file, environment variables
``CDR_BILLING__<SECTION>__<KEY>``, CLI overrides. No other module reads the environment.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF = PROJECT_ROOT / "conf" / "local.yaml"


def project_path(setting: str) -> Path:
    """A configured path: as given when absolute, else relative to the project (not the cwd)."""
    path = Path(setting)
    return path if path.is_absolute() else PROJECT_ROOT / path


ENV_PREFIX = "CDR_BILLING__"
ENV_CONF_FILE = "CDR_BILLING_CONF"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line naming the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


class SparkSettings(_Section):
    master: str = "local[*]"
    app_name: str = "cdr-billing"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(8, ge=1)
    delta_jar_version: str = "4.4.0"
    jars_dir: str = ".jars"
    # True: the driver starts for seconds of work on little data (the demo, the tests'
    # spark-submits): its JVM compiles with C1 only and Spark interprets expressions instead of
    # generating code. Most of such a fresh driver's CPU otherwise goes to compiling code (C2's
    # and Janino's) that then runs for seconds. Never for real volumes: compiled code is what
    # makes millions of events fast.
    short_runs: bool = False
    # The driver JVM's class-data archive, built by `make setup` (jobs/common/class_archive.py):
    # a fresh driver maps Spark's and Delta's classes from it instead of loading them from jars.
    # Relative to the project; "" turns it off; a missing or stale one is ignored by the JVM.
    class_archive: str = ".jars/driver-classes.jsa"
    extra_conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        if not (value.startswith(("local", "spark://", "k8s://")) or value == "yarn"):
            raise ValueError(f"unsupported master {value!r} (local[N], spark://, yarn or k8s://)")
        return value


class PathSettings(_Section):
    warehouse: str = "./warehouse"
    landing: str = "./landing"
    reference: str = "./reference"
    rules: str = "rating_rules/default"
    reports: str = "./reports"


class OperatorSettings(_Section):
    timezone: str = "Europe/Berlin"
    tenant: str = "cgrates.org"
    home_country_code: str = Field("49", pattern=r"^[1-9][0-9]{0,2}$")
    national_prefix: str = Field("0", pattern=r"^[0-9]*$")
    international_prefix: str = Field("00", pattern=r"^[0-9]+$")
    normalise_numbers: bool = True
    home_plmn: str = Field("26201", pattern=r"^[0-9]{5,6}$")
    pbx_timezone: str = "Europe/Berlin"

    @field_validator("timezone", "pbx_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)


class ValidationSettings(_Section):
    mostly: float = Field(0.95, ge=0.0, le=1.0)
    max_call_duration_s: int = Field(86400, gt=0)
    max_data_volume_bytes: int = Field(10**12, gt=0)
    future_tolerance_minutes: int = Field(15, ge=0)
    partial_timeout_hours: int = Field(48, gt=0)
    # the oldest event a run accepts, in operator-zone days before its logical date (STALE_EVENT);
    # rating looks back as far for the events it has not rated yet
    max_event_age_days: int = Field(62, gt=0)


class AssuranceSettings(_Section):
    """Usage assurance: when a counter and the CDRs disagree, and how much leakage fails the run."""
    tolerance_pct: float = Field(2.0, ge=0.0)
    # a difference at or below this is never a mismatch (late rounding, one call on a quiet trunk)
    absolute_tolerance: dict[str, int] = Field(
        default_factory=lambda: {"answered_calls": 0, "conversation_seconds": 30, "data_octets": 1_000_000})
    leakage_budget_pct: float = Field(10.0, ge=0.0)
    # a day is judged once late CDRs had this many more daily runs to arrive
    settle_days: int = Field(1, ge=0, le=7)
    plot_objects: int = Field(4, ge=1, le=12)


class RunSettings(_Section):
    """One run per job and date at a time (audit/run_locks)."""
    # A lock whose holder cannot be checked (another host) is taken over after this long.
    lock_stale_after_hours: float = Field(12.0, gt=0)


class PrivacySettings(_Section):
    expose_numbers: bool = False
    masked_digits: int = Field(3, ge=0, le=15)
    hash_key: str = Field("dev-only-not-secret", min_length=8)


class Config(_Section):
    spark: SparkSettings = SparkSettings()
    paths: PathSettings = PathSettings()
    operator: OperatorSettings = OperatorSettings()
    validation: ValidationSettings = ValidationSettings()
    assurance: AssuranceSettings = AssuranceSettings()
    privacy: PrivacySettings = PrivacySettings()
    runs: RunSettings = RunSettings()

    def table_path(self, layer: str, table: str) -> str:
        return f"{self.paths.warehouse.rstrip('/')}/{layer}/{table}"

    def with_paths(self, **paths: str) -> "Config":
        return self.model_copy(update={"paths": self.paths.model_copy(update=paths)})


def _set_nested(target: dict, dotted: list[str], value: Any) -> None:
    for key in dotted[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"config error: {'.'.join(dotted)}: {key} is not a section")
    target[dotted[-1]] = value


# Set from a secret store in production: Airflow passes the Variable `cdr_billing_secret_hash_key`
# (masked in task logs: its name says secret) as CDR_BILLING__PRIVACY__HASH_KEY.
SECRET_KEYS = {"privacy.hash_key"}


def _env_overrides(environ: Mapping[str, str]) -> dict:
    overrides: dict = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            dotted = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
            if value == "" and ".".join(dotted) in SECRET_KEYS:
                continue                    # an unset secret (empty Airflow Variable) keeps the file's value
            parsed = yaml.safe_load(value) if value != "" else ""
            # YAML would turn "0049" into 49: keep strings for string-typed values.
            _set_nested(overrides, dotted, value if isinstance(parsed, int) and value.startswith("0") else parsed)
    return overrides


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"config error: {where}: {msg}{more}"


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load, merge and validate; raise ConfigError with a one-line message naming the key."""
    environ = os.environ if environ is None else environ
    conf_path = Path(path or environ.get(ENV_CONF_FILE) or DEFAULT_CONF)
    try:
        raw = yaml.safe_load(conf_path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config error: file not found: {conf_path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config error: {conf_path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {conf_path}: top level must be a mapping")
    merged = _deep_merge(raw, _env_overrides(environ))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_nested(merged, dotted.split("."), value)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
