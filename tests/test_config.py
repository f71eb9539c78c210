import pytest

from jobs.common.config import ConfigError, load_config


def test_defaults_are_the_embedded_local_settings():
    conf = load_config(environ={})
    assert conf.spark.master == "local[*]"
    assert conf.paths.warehouse == "./warehouse" and conf.paths.rules == "rating_rules/default"
    assert conf.operator.timezone == "Europe/Berlin" and conf.operator.home_country_code == "49"
    assert conf.table_path("gold", "rated_events") == "./warehouse/gold/rated_events"


def test_environment_overrides_file_and_cli_overrides_environment():
    env = {"CDR_BILLING__PATHS__WAREHOUSE": "/env/wh", "CDR_BILLING__OPERATOR__HOME_COUNTRY_CODE": "44",
           "CDR_BILLING__OPERATOR__NATIONAL_PREFIX": "0"}
    conf = load_config(environ=env)
    assert conf.paths.warehouse == "/env/wh"
    assert conf.operator.home_country_code == "44" and conf.operator.national_prefix == "0"
    conf = load_config(overrides={"paths.warehouse": "/cli/wh"}, environ=env)
    assert conf.paths.warehouse == "/cli/wh"


@pytest.mark.parametrize("env, message", [
    ({"CDR_BILLING__OPERATOR__TIMEZONE": "Europe/Berln"}, "config error: operator.timezone: unknown time zone 'Europe/Berln'"),
    ({"CDR_BILLING__PATHS__WAREHOUS": "/x"}, "config error: paths.warehous: unknown key"),
    ({"CDR_BILLING__SPARK__MASTER": "mesos://x"}, "config error: spark.master: unsupported master"),
    ({"CDR_BILLING__VALIDATION__MOSTLY": "1.5"}, "config error: validation.mostly:"),
])
def test_invalid_configuration_is_one_line_naming_the_key(env, message):
    with pytest.raises(ConfigError) as error:
        load_config(environ=env)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_cluster_example_validates_and_differs_only_in_configuration():
    from jobs.common.config import PROJECT_ROOT

    conf = load_config(PROJECT_ROOT / "conf" / "cluster.example.yaml", environ={})
    assert conf.spark.master.startswith("spark://")
    assert conf.paths.warehouse.startswith("s3a://")


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_an_empty_secret_from_airflow_keeps_the_configured_key_and_a_set_one_wins():
    assert load_config(environ={"CDR_BILLING__PRIVACY__HASH_KEY": ""}).privacy.hash_key == "dev-only-not-secret"
    assert load_config(environ={"CDR_BILLING__PRIVACY__HASH_KEY": "from-the-vault-123"}).privacy.hash_key == "from-the-vault-123"


def test_no_credentials_in_the_repository():
    """Tracked files carry no private keys, cloud keys or passwords (the hash key's dev default
    is named as such and overridden from Airflow's masked Variable in production)."""
    import re
    import subprocess

    from jobs.common.config import PROJECT_ROOT

    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    patterns = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]\s*\S{20,}"
                          r"|password\s*[:=]\s*['\"][^'\"{}<$]{6,}['\"]", re.IGNORECASE)
    found = []
    for name in tracked.stdout.split():
        path = PROJECT_ROOT / name
        if path.suffix in {".png", ".gz", ".jar"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        found += [f"{name}: {m.group(0)[:40]}" for m in patterns.finditer(text)]
    assert not found
