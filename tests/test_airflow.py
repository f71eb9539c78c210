"""The real DAGs on generated data through `dag.test()`, in process (Airflow as a person runs it:
test_airflow_standalone.py)."""
from __future__ import annotations

import shutil
from datetime import date, datetime, timezone

import pytest

from jobs.common.config import PROJECT_ROOT
from jobs.demo import airflow_env
from jobs.generate.cdrs import GeneratorSettings, generate

DAY = date(2026, 11, 2)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_world(tmp_path_factory, base_conf):
    """Generated data for one day and the environment the DAGs and their spark-submits run in."""
    out = tmp_path_factory.mktemp("airflow_world")
    generate(GeneratorSettings(out=out, seed=11, subscribers=30, start=DAY, days=1, events_per_day=120))
    return out, small_days_env(base_conf, out)


# two planted leaks are most of so small a day's traffic, judged elsewhere (test_pipeline_e2e);
# and so are its planted bad records
SMALL_DAYS = {"CDR_BILLING__ASSURANCE__LEAKAGE_BUDGET_PCT": "100", "CDR_BILLING__VALIDATION__MOSTLY": "0.8",
              "CDR_BILLING__SPARK__SHUFFLE_PARTITIONS": "2"}


def small_days_env(base_conf, out) -> dict[str, str]:
    """The environment the DAGs and their spark-submits run in, for generated days under `out`."""
    # orchestration is what is tested here; the counters' 72 files a day are test_pipeline_e2e's
    shutil.rmtree(out / "landing" / "traffic")
    return {**airflow_env(base_conf, out), **SMALL_DAYS}


def test_dag_test_runs_cdr_daily_then_billing_cycle(airflow_world, monkeypatch):
    out, env = airflow_world
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(PROJECT_ROOT / "dags"))
    logical = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)
    run = bag.get_dag("cdr_daily").test(logical_date=logical)
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == dict.fromkeys(
        ["landing_files", "collect", "validate", "rate", "assure", "publish"], "success")
    billing = bag.get_dag("billing_cycle").test(logical_date=logical)
    assert billing.state == "success"

    from deltalake import DeltaTable

    warehouse = out / "warehouse"
    audit = DeltaTable(str(warehouse / "audit" / "pipeline_runs")).to_pandas()
    assert sorted(audit["job"]) == ["assure", "bill", "collect", "publish", "rate", "validate"]
    assert set(audit["status"]) == {"succeeded"}
    assert len(DeltaTable(str(warehouse / "gold" / "invoices")).to_pandas()) > 0
    assert len(DeltaTable(str(warehouse / "gold" / "usage_assurance")).to_pandas()) > 0
