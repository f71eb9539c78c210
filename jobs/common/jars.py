"""Delta Lake's JVM jars: fetched once from Maven Central into a git-ignored folder.

Maven (`mvn dependency:copy`) is the client: the JVM's own Ivy resolution
(`spark.jars.packages`) could not reach the registry on the machines this was built on.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from jobs.common.config import SparkSettings, project_path

FETCH_HINT = "run `make jars` (or `python -m jobs.common.jars`) to fetch them from Maven Central"


class MissingJarsError(RuntimeError):
    pass


def jar_coordinates(settings: SparkSettings) -> list[str]:
    version = settings.delta_jar_version
    return [f"io.delta:delta-spark_4.1_2.13:{version}", f"io.delta:delta-storage:{version}"]


def jars_dir(settings: SparkSettings) -> Path:
    return project_path(settings.jars_dir)


def _jar_file(coordinate: str) -> str:
    _, artifact, version = coordinate.split(":")
    return f"{artifact}-{version}.jar"


def jar_paths(settings: SparkSettings) -> list[Path]:
    """Where the jars are (or will be, once fetched)."""
    return [jars_dir(settings) / _jar_file(c) for c in jar_coordinates(settings)]


def required_jars(settings: SparkSettings) -> list[Path]:
    """The jar paths, or MissingJarsError naming the missing ones and how to fetch them."""
    folder = jars_dir(settings)
    paths = jar_paths(settings)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise MissingJarsError(f"Delta jars missing in {folder}: {', '.join(missing)}; {FETCH_HINT}")
    return paths


def fetch(settings: SparkSettings) -> list[Path]:
    folder = jars_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingJarsError("Maven (mvn) is needed to fetch the Delta jars: apt-get install maven")
    for coordinate, path in zip(jar_coordinates(settings), jar_paths(settings)):
        if path.is_file():
            continue
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={coordinate}", f"-DoutputDirectory={folder}"],
            capture_output=True, text=True, cwd=folder,
        )
        if result.returncode != 0:
            errors = [line for line in result.stdout.splitlines() if "ERROR" in line][:3]
            raise MissingJarsError(f"could not fetch {coordinate}: {' / '.join(errors) or result.stderr.strip()}")
    return required_jars(settings)


if __name__ == "__main__":
    from jobs.common.config import load_config

    try:
        for jar in fetch(load_config().spark):
            print(f"ok {jar}")
    except MissingJarsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
