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
