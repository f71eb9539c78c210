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
    yield session
    session.stop()


@pytest.fixture
def conf(base_conf, tmp_path: Path):
    """The session's config with a fresh warehouse/landing/reference per test."""
    return base_conf.with_paths(warehouse=str(tmp_path / "warehouse"), landing=str(tmp_path / "landing"),
                                reference=str(tmp_path / "reference"), reports=str(tmp_path / "reports"))


# The modules that take minutes (a real Airflow, spark-submits, killed drivers, a cluster), longest
# first. `make test` hands whole modules to two workers in this order (--no-loadscope-reorder):
# longest first keeps both busy to the end, where xdist's own order (by test count) left the two
# one-test Airflow modules for last, on one worker.
LONGEST_MODULES = ("test_reliability.py", "test_airflow_standalone.py", "test_pipeline_e2e.py", "test_airflow.py",
                   "test_bill_run.py", "test_rate_stage.py", "test_validate.py")


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
