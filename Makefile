# churnlens: `make demo` and `make test` work on a fresh machine (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
BASE   := $(VENV)/.installed
CDNOW  := data/external/CDNOW_master.txt

.PHONY: demo test lint format data bench clean help

help:
	@echo "make demo   set up .venv; sample data -> train -> segment -> score -> report, tracked in MLflow"
	@echo "make test   set up .venv with the dev and spark extras, fetch CDNOW, run ruff and the test suite"
	@echo "make data   fetch the CDNOW log into data/external/ (sha256 checked)"
	@echo "make bench  run the benchmarks (slow; prints throughput and peak memory)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(BASE): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(BASE)

# the tests need the dev tools and the spark extra (pyspark; Java 17 on the machine)
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev,spark]"
	touch $(BASE) $(STAMP)

$(CDNOW): scripts/fetch_cdnow.py | $(PY)
	$(PY) scripts/fetch_cdnow.py --dest data/external

data: $(CDNOW)

demo: $(BASE)
	$(VENV)/bin/churnlens demo --customers 20000 --workdir demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

# pyspark's own bin/spark-submit and spark-class (the Spark cluster test) need SPARK_HOME
SPARK_HOME_OF_VENV = $$($(PY) -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')

test: $(STAMP) $(CDNOW) lint
	SPARK_HOME=$(SPARK_HOME_OF_VENV) $(PY) -m pytest -n 2 --dist loadgroup --nbmake tests notebooks

bench: $(STAMP)
	$(PY) benchmarks/bench_features.py --events 10000000
	$(PY) benchmarks/bench_scoring.py --customers 1000000
	$(PY) benchmarks/bench_scale.py --customers 2000000

clean:
	rm -rf $(VENV) data/sample demo .pytest_cache .ruff_cache .hypothesis
