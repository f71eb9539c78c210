from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jobs.common.config import PROJECT_ROOT, load_config

SHARED = PROJECT_ROOT.parent / "shared"
CGRATES_SAMPLES = SHARED / "data" / "cgrates-tariffplans"
# columns that name the run or the moment (and any `…_at`): they differ between any two runs by design
RUN_COLUMNS = {"run_id", "bill_run_id", "source_versions"}


def comparable_columns(columns) -> list[str]:
    """The columns two runs' copies of a table are compared on."""
    return [c for c in columns if c not in RUN_COLUMNS and not c.endswith("_at")]


@pytest.fixture(scope="session")
def base_conf(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("warehouse")
    return load_config(overrides={"spark.master": "local[2]", "spark.shuffle_partitions": 2,
                                  "paths.warehouse": str(warehouse)}, environ={})


@pytest.fixture(scope="session")
def spark(base_conf):
    """One SparkSession for the whole run: local[2], 2 shuffle partitions, UI off, and expressions
    interpreted, as a short run's are (`spark.short_runs`): on frames of a few hundred rows, Spark
    spent more compiling each new plan's generated code (Janino, then the JIT) than running it.
    Tests marked `generated_code` run with generated code, as real volumes do."""
    from jobs.common.spark import build_spark

    # py4j logs "Closing down clientserver connection" at INFO from a destructor at interpreter exit;
    # once a test has imported Airflow (its logging set-up), that line went to a stream pytest had
    # already closed: "--- Logging error --- ValueError: I/O operation on closed file"
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = build_spark(base_conf, app_name="cdr-billing-tests")
    _interpret_expressions(session)
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(autouse=True)
def expression_mode(request):
    """Generated code for the tests marked `generated_code` (the modules whose expressions compute
    money or parse what mediation sent), interpreted expressions for the rest. Runtime settings:
    each query is planned with the mode in force when it runs."""
    if request.node.get_closest_marker("generated_code") is None:
        yield
        return
    from jobs.common.spark import INTERPRETED_EXPRESSIONS

    session = request.getfixturevalue("spark")
    for key in INTERPRETED_EXPRESSIONS:
        session.conf.unset(key)
    try:
        yield
    finally:
        _interpret_expressions(session)


def _interpret_expressions(session) -> None:
    from jobs.common.spark import INTERPRETED_EXPRESSIONS

    for key, value in INTERPRETED_EXPRESSIONS.items():
        session.conf.set(key, value)


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


# The test files that take longest (seconds in a `make test`, 2026-12-06 at 1a0da65, this project's
# 2-core VM), heaviest first. `make test` hands whole files to its two workers in collection order
# (--dist loadfile --no-loadscope-reorder): started first, they run beside the many short files
# instead of one of them running alone at the end (xdist's own order, by test count, put the
# 320 s Airflow file last, ~150 s with one worker idle). Files not listed follow in their own order.
HEAVIEST_FIRST = ["test_airflow_standalone.py",    # 761
                  "test_reliability.py",           # 557
                  "test_pipeline_e2e.py",          # 303
                  "test_rate_stage.py",            # 246
                  "test_validate.py",              # 189
                  "test_rating.py",                # 120
                  "test_bill_run.py"]              # 109


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))       # stable: a file's tests keep their order
