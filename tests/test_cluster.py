"""The cluster path is real: the daily run and a bill run on a Spark standalone master and worker
started on loopback from the pip-installed Spark, compared table by table with a local run."""
from __future__ import annotations

import sys

import pytest

from tests.test_reliability import BILL_DATE, BILL_TABLES, DAILY_TABLES, DAY, cdr_billing, contents
from tests.test_reliability import world  # noqa: F401 - the same generated data and local reference run


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A Spark standalone master and worker on loopback, started from the pip-installed Spark."""
    import socket

    from benchmarks.standalone_cluster import start

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    cluster = start(free_port(), free_port(), cores=2, memory="3g", state=tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_the_daily_run_and_a_bill_run_on_a_standalone_cluster(spark, world, standalone):
    import json
    import urllib.request

    conf = world["conf"].with_paths(warehouse=str(world["root"] / "on-cluster"))
    on_cluster = {"CDR_BILLING__SPARK__MASTER": standalone.master_url,
                  "CDR_BILLING__SPARK__EXTRA_CONF": json.dumps({"spark.pyspark.python": sys.executable,
                                                                "spark.executor.memory": "1g"})}
    daily = cdr_billing(conf, "run-day", "--date", DAY.isoformat(), "--stages", "collect,validate,rate", **on_cluster)
    assert daily.returncode == 0, daily.stderr[-3000:]
    billed = cdr_billing(conf, "bill", "--run-date", BILL_DATE.isoformat(), **on_cluster)
    assert billed.returncode == 0, billed.stderr[-3000:]
    with urllib.request.urlopen(f"{standalone.web_url}/json/", timeout=10) as response:
        apps = json.load(response)["completedapps"]
    assert len(apps) >= 2 and all(app["cores"] > 0 for app in apps)       # both ran on the cluster's executors
    for table in DAILY_TABLES + BILL_TABLES:
        expected = world["daily"].get(table, world["bill"].get(table))
        assert contents(spark, conf, *table) == expected, table
