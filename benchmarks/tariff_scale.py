"""How a large tariff loads and rates: N destination prefixes (default 200,000) over 5,000
destinations, then 20,000 calls rated against it. Prints seconds per step.

    .venv/bin/python benchmarks/tariff_scale.py [--prefixes 200000] [--events 20000] [--master local[2]]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common.config import load_config  # noqa: E402
from jobs.common.spark import build_spark  # noqa: E402
from jobs.rating import CompiledTariff, rate_events  # noqa: E402
from jobs.tariff import load_tariff  # noqa: E402

HEADERS = {
    "Destinations": "#Id,Prefix", "Rates": "#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart",
    "DestinationRates": "#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy",
    "RatingPlans": "#Id,DestinationRatesId,TimingTag,Weight",
    "RatingProfiles": "#Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject",
}


def write_large_plan(folder: Path, n_prefixes: int, n_destinations: int, rng: random.Random) -> list[str]:
    prefixes: set[str] = set()
    while len(prefixes) < n_prefixes:
        prefixes.add("4" + str(rng.randrange(10**5, 10**8)))
    ordered = sorted(prefixes)
    files = {
        "Destinations": [f"DST_{i % n_destinations:05d},{p}" for i, p in enumerate(ordered)],
        "Rates": ["RT_MIN,0,0.1,60s,60s,0s", "RT_SEC,0,0.2,60s,1s,0s"],
        "DestinationRates": [f"DR_{i:05d},DST_{i:05d},{'RT_MIN' if i % 2 else 'RT_SEC'},*up,4,0,"
                             for i in range(n_destinations)],
        "RatingPlans": [f"RP,DR_{i:05d},*any,10" for i in range(n_destinations)],
        "RatingProfiles": ["cgrates.org,call,*any,,RP,"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (folder / f"{name}.csv").write_text(HEADERS[name] + "\n" + "\n".join(rows) + "\n")
    return ordered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        prefixes = write_large_plan(Path(tmp) / "plan", args.prefixes, 5000, rng)
        started = time.perf_counter()
        tariff = load_tariff(Path(tmp) / "plan", "Europe/Berlin")
        print(f"load + validate {args.prefixes:,} prefixes: {time.perf_counter() - started:.1f}s")
        spark = build_spark(load_config(overrides={"spark.master": args.master}, environ={}))
        started = time.perf_counter()
        compiled = CompiledTariff(spark, tariff, "cgrates.org")
        print(f"compile (prefix table, segments): {time.perf_counter() - started:.1f}s")
        events = spark.createDataFrame(
            [(f"e{i}", "call", "S", rng.choice(prefixes) + "123", datetime(2026, 11, 5, 10), 90) for i in range(args.events)],
            "event_id string, category string, plan_id string, destination string, event_start timestamp, usage long")
        started = time.perf_counter()
        outcome = rate_events(events, compiled, "Europe/Berlin").groupBy("rating_reason").count().collect()
        print(f"rate {args.events:,} calls: {time.perf_counter() - started:.1f}s  outcome {[tuple(r) for r in outcome]}")
        spark.stop()


if __name__ == "__main__":
    main()
