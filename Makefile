# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
# the embedded SQLite metadata DB: wait for its write lock instead of failing after 5 s
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS ?= jobs.airflow_stage.SQLITE_CONNECT_ARGS
export AIRFLOW_CONN_SPARK_DEFAULT ?= {"conn_type": "spark", "host": "local[2]", "extra": {"spark-binary": "spark-submit"}}
export PYTHONWARNINGS ?= ignore::DeprecationWarning

# the driver JVM's class-data archive (jobs/common/class_archive.py): recorded once, mapped by every driver
CLASS_ARCHIVE := .jars/driver-classes.jsa

.PHONY: setup venv jars class-archive airflow-db demo test airflow bench bench-tariff bench-cluster cluster-up cluster-down clean

setup: venv jars $(CLASS_ARCHIVE) airflow-db

venv: $(VENV)/.installed
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip<26"
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $@

jars: $(VENV)/.installed
	$(BIN)/python -m jobs.common.jars

$(CLASS_ARCHIVE): $(VENV)/.installed | jars
	$(BIN)/python -m jobs.common.class_archive

# record it again (after a JDK update, say: the JVM then ignores the old one, with a warning)
class-archive: jars
	$(BIN)/python -m jobs.common.class_archive

airflow-db: $(VENV)/.installed
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/cdr-billing demo

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

airflow: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/airflow standalone

BENCH_EVENTS ?= 1000000
BENCH_ARGS ?=
bench: setup
	$(BIN)/python benchmarks/pipeline.py --events $(BENCH_EVENTS) $(BENCH_ARGS)

bench-tariff: setup
	$(BIN)/python benchmarks/tariff_scale.py

CLUSTER_MASTER ?= spark://127.0.0.1:7077
cluster-up: setup
	$(BIN)/python benchmarks/standalone_cluster.py up

cluster-down:
	$(BIN)/python benchmarks/standalone_cluster.py down

bench-cluster: setup
	$(BIN)/python benchmarks/pipeline.py --events $(BENCH_EVENTS) --master $(CLUSTER_MASTER) --out build/bench-cluster $(BENCH_ARGS)

clean:
	rm -rf warehouse landing reference demo-data .airflow
