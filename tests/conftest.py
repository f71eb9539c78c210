from __future__ import annotations

from pathlib import Path

import pytest

from jobs.common.config import PROJECT_ROOT, load_config

SHARED = PROJECT_ROOT.parent / "shared"
CGRATES_SAMPLES = SHARED / "data" / "cgrates-tariffplans"


@pytest.fixture(scope="session")
def base_conf(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("warehouse")
    return load_config(overrides={"spark.master": "local[2]", "spark.shuffle_partitions": 2,
                                  "paths.warehouse": str(warehouse)}, environ={})


@pytest.fixture(scope="session")
def spark(base_conf):
    """One SparkSession for the whole run: local[2], 2 shuffle partitions, UI off."""
    from jobs.common.spark import build_spark

    session = build_spark(base_conf, app_name="cdr-billing-tests")
    try:
        yield session
        # A CLI command called in process gets this session back with its own settings applied:
        # a short run's would have left every later test interpreting what production compiles.
        assert session.conf.get("spark.sql.codegen.factoryMode") != "NO_CODEGEN", \
            "an in-process run switched the test session to a short run's interpreted expressions"
    finally:
        session.stop()


@pytest.fixture
def conf(base_conf, tmp_path: Path):
    """The session's config with a fresh warehouse/landing/reference per test."""
    return base_conf.with_paths(warehouse=str(tmp_path / "warehouse"), landing=str(tmp_path / "landing"),
                                reference=str(tmp_path / "reference"), reports=str(tmp_path / "reports"))


@pytest.fixture
def session_settings_for_the_cli(base_conf, monkeypatch):
    """The test session's Spark settings in the environment the CLI reads: called in process,
    `cdr-billing` builds its session from configuration and gets the test session back, so it
    must ask for that session's settings or it would change them for every later test."""
    monkeypatch.setenv("CDR_BILLING__SPARK__SHUFFLE_PARTITIONS", str(base_conf.spark.shuffle_partitions))
    monkeypatch.setenv("CDR_BILLING__SPARK__MASTER", base_conf.spark.master)


# The test files that take longest (seconds in a clean-clone `make test`, 2026-11-28), heaviest
# first. `make test` hands whole files to its two workers in collection order
# (--dist loadfile --no-loadscope-reorder): started first, they run beside the many short files
# instead of one of them running alone at the end (xdist's own order, by test count, put the
# 320 s Airflow file last, ~150 s with one worker idle). Files not listed follow in their own order.
HEAVIEST_FIRST = ["test_reliability.py",           # 600
                  "test_airflow_standalone.py",    # 320
                  "test_pipeline_e2e.py",          # 280
                  "test_validate.py",              # 250
                  "test_rate_stage.py",            # 180
                  "test_airflow.py",               # 180
                  "test_rating.py",                # 160
                  "test_bill_run.py"]              # 110


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))       # stable: a file's tests keep their order
