"""A Spark standalone master and worker on loopback, from the pip-installed Spark.

    .venv/bin/python benchmarks/standalone_cluster.py up [--cores 2] [--memory 6g]   # prints the master URL
    .venv/bin/python benchmarks/standalone_cluster.py down

Then run anything against it by configuration alone, e.g.
    CDR_BILLING__SPARK__MASTER=spark://127.0.0.1:7077 \\
    CDR_BILLING__SPARK__EXTRA_CONF='{"spark.pyspark.python": "'$PWD'/.venv/bin/python"}' \\
    .venv/bin/cdr-billing run-day --date 2026-11-02
or `make bench-cluster`. The daemons write their logs and pid files to build/cluster/.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE = PROJECT_ROOT / "build" / "cluster"


@dataclass
class Cluster:
    master_url: str
    web_url: str
    processes: list

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def _daemon(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "SPARK_HOME": _spark_home(), "SPARK_LOCAL_IP": "127.0.0.1"}
    spark_class = Path(sys.executable).parent / "spark-class"
    return subprocess.Popen([str(spark_class), *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def alive_workers(web_url: str) -> int:
    with urllib.request.urlopen(f"{web_url}/json/", timeout=5) as response:
        return int(json.load(response).get("aliveworkers", 0))


def start(port: int = 7077, web_port: int = 8081, cores: int = 2, memory: str = "6g",
          state: Path = STATE, timeout_s: float = 90) -> Cluster:
    """Start both daemons and wait until the worker has registered with the master."""
    state.mkdir(parents=True, exist_ok=True)
    master = _daemon(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                      "--webui-port", str(web_port)], state / "master.log")
    url, web = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{web_port}"
    worker = _daemon(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", str(cores),
                      "--memory", memory, "--webui-port", "0", "--work-dir", str(state / "work")], state / "worker.log")
    cluster = Cluster(url, web, [master, worker])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if alive_workers(web) >= 1:
                (state / "pids").write_text(f"{master.pid} {worker.pid}\n")
                return cluster
        except OSError:
            pass
        if master.poll() is not None or worker.poll() is not None:
            break
        time.sleep(1)
    cluster.stop()
    raise RuntimeError(f"standalone cluster did not come up; see {state}/master.log and {state}/worker.log")


def stop_recorded(state: Path = STATE) -> None:
    pids = state / "pids"
    if not pids.exists():
        return
    for pid in map(int, pids.read_text().split()):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    pids.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--port", type=int, default=7077)
    parser.add_argument("--web-port", type=int, default=8081)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--memory", default="6g")
    args = parser.parse_args()
    if args.action == "down":
        stop_recorded()
        return 0
    cluster = start(args.port, args.web_port, args.cores, args.memory)
    print(f"master {cluster.master_url}  (web UI {cluster.web_url}); stop with: {Path(__file__).name} down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
