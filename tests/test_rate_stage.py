from datetime import date, datetime

from pyspark.sql import functions as F

from jobs import rate
from jobs.common.delta_io import merge, read_table
from schemas.tables import EVENTS
from tests.test_rating import write_plan

DAY = date(2026, 11, 5)


def _plan(folder, prefixes):
    return write_plan(folder, Destinations=[f"DST,{p}" for p in prefixes], Rates=["RT,0,1,60s,60s,0s"],
                      DestinationRates=["DR,DST,RT,*up,4,0,"], Timings=[], RatingPlans=["RP,DR,*any,10"],
                      RatingProfiles=["cgrates.org,call,*any,,RP,"])


def _event(event_id, destination, chargeable=True):
    return (event_id, "voice", [f"MSC01|{event_id}|1"], ["cdr/voice/f.csv"], "491511000001", destination,
            datetime(2026, 11, 5, 10, 0), DAY, 60, "s", chargeable, "call", "ACC1", "P_BASIC", "EUR", "DE", "TG01",
            None, None, "r0")


def test_unratable_events_wait_in_quarantine_until_recycle_rates_them(spark, conf, tmp_path):
    conf = conf.with_paths(rules=str(_plan(tmp_path / "v1", ["49"])))
    merge(spark.createDataFrame([_event("a", "4930"), _event("b", "3312"), _event("c", "3312", chargeable=False)], EVENTS),
          conf.table_path("silver", "events"), ["event_id"])
    first = rate.run(spark, conf, DAY)
    assert (first.records_in, first.rated, first.quarantined) == (3, 2, 1)
    again = rate.run(spark, conf, DAY)                       # suspended events are left to recycle
    assert again.records_in == 0
    quarantine = read_table(spark, conf.table_path("silver", "quarantine"))
    assert [(r.record_key, r.reason_code, r.status) for r in quarantine.collect()] == [("b", "UNAUTHORIZED_DESTINATION", "suspended")]

    fixed = conf.with_paths(rules=str(_plan(tmp_path / "v2", ["49", "33"])))
    recycled = rate.recycle(spark, fixed)
    assert (recycled.records_in, recycled.rated, recycled.quarantined) == (1, 1, 0)
    row = read_table(spark, conf.table_path("silver", "quarantine")).first()
    assert (row.status, row.attempts, row.reason_code) == ("recycled", 2, "UNAUTHORIZED_DESTINATION")
    rated = {r.event_id: r for r in read_table(spark, conf.table_path("gold", "rated_events")).collect()}
    assert set(rated) == {"a", "b", "c"} and str(rated["b"].cost) == "1.0000000000" and rated["c"].cost == 0
    versions = read_table(spark, conf.table_path("gold", "tariff_versions")).select("tariff_version").collect()
    assert rated["b"].tariff_version != rated["a"].tariff_version and len(versions) == 2
    assert rate.recycle(spark, fixed).records_in == 0           # nothing left: idempotent
