# recsys: `make help` lists the targets. Every target sets up what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
STAMP := .state/stamps
SECRET_FILE := .state/pseudonym_secret
LOCAL_SECRETS := .state/postgres_password .state/redis_password .state/jwt_secret
PYTEST_ARGS ?=
# `make test` runs the test modules on this many pytest-xdist processes (1: one process, no xdist),
# in the order tests/conftest.py gives them (the longest first), not xdist's (the most tests first).
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# Local runs keep Spark's driver on loopback; the secret for pseudonyms comes from the
# environment, or on this machine from a random one made once under .state/.
export SPARK_LOCAL_IP ?= 127.0.0.1
WITH_SECRET = RECSYS__PRIVACY__PSEUDONYM_SECRET="$${RECSYS__PRIVACY__PSEUDONYM_SECRET:-$$(cat $(SECRET_FILE))}"
# The local servers' passwords and the API's token key likewise (read when a recipe runs, after
# `setup` made them); the demo's and the tests' servers share them.
export RECSYS__POSTGRES__PASSWORD ?= $(shell cat .state/postgres_password 2>/dev/null)
export RECSYS__REDIS__PASSWORD ?= $(shell cat .state/redis_password 2>/dev/null)
export RECSYS__AUTH__JWT_SECRET ?= $(shell cat .state/jwt_secret 2>/dev/null)

.PHONY: help setup jars services-up services-down test cluster-test test-fast lint demo generate import-lastfm eval-lastfm \
	token pii-scan train recommend publish rollback serve feedback train-reranker monitor migrate refresh forget maintain bench bench-topk bench-publish bench-api bench-pipeline bench-layout wheel clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP)/prereqs $(STAMP)/python $(STAMP)/jars $(SECRET_FILE) $(LOCAL_SECRETS) ## prerequisites, virtualenv, packages, jars (idempotent)

$(STAMP)/python: setup.py requirements.lock | $(STAMP)/prereqs
	@mkdir -p $(STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || { $(PY) -m ensurepip >/dev/null 2>&1; $(PY) -m pip install -q uv==$(UV_VERSION); }
	$(UV) pip install -q -p $(PY) -c requirements.lock -e '.[dev]'
	@touch $@

# recsys' own JVM code (jvm/src) is compiled against the installed pyspark's jars, the very Spark
# and Jackson it runs with, into .jars/recsys-jvm.jar.
JAVA_SOURCES := $(shell find jvm/src -name '*.java')
jars: $(STAMP)/jars ## resolve the JVM jars (Delta Lake, PostgreSQL JDBC) from Maven Central and build recsys' own into .jars/
$(STAMP)/jars: jvm/pom.xml $(JAVA_SOURCES) | $(STAMP)/prereqs $(STAMP)/python
	@mkdir -p $(STAMP)
	rm -rf .jars build/jvm
	mvn -B -q -f jvm/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars -DexcludeTransitive=true
	javac --release 17 -Xlint:all,-path -Werror -d build/jvm \
		-cp "$$($(PY) -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')/jars/*" $(JAVA_SOURCES)
	jar --create --file .jars/recsys-jvm.jar -C build/jvm .
	@touch $@

$(STAMP)/prereqs: scripts/install-prereqs.sh
	@mkdir -p $(STAMP)
	@bash scripts/install-prereqs.sh
	@touch $@

$(SECRET_FILE) $(LOCAL_SECRETS):
	@mkdir -p $(dir $@) && chmod 700 $(dir $@)
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_hex(32))" > $@

services-up: setup ## start local PostgreSQL and Redis when the config points here and none answers
	$(PY) jobs/services.py up

services-down: ## stop the local servers that services-up started
	@if [ -x $(PY) ]; then $(PY) jobs/services.py down; RECSYS_ENV=test $(PY) jobs/services.py down; fi

test: setup ## run every test, the slow end-to-end ones too (what CI runs)
	RECSYS_ENV=test $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

cluster-test: services-up ## the chain on a real Spark standalone cluster (master + 2 workers) vs local[2]; part of make test
	RECSYS_ENV=test $(PY) -m pytest tests/test_cluster.py $(PYTEST_ARGS)

test-fast: setup ## run the tests, skipping those marked slow
	RECSYS_ENV=test $(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff (style, docstrings, complexity, annotations) and mypy on the library, jobs and benchmarks
	$(VENV)/bin/ruff check recsys jobs tests notebooks benchmarks
	$(VENV)/bin/mypy

demo: services-up ## run the pipeline end to end on embedded defaults and print where things are
	@$(WITH_SECRET) $(PY) jobs/demo.py

generate: services-up ## write generated events to the landing zone and accounts to PostgreSQL (datagen.*)
	$(PY) jobs/generate.py $(ARGS)

LASTFM_DIR ?= ../shared/data/lastfm-2k
import-lastfm: services-up ## import HetRec Last.fm 2K (LASTFM_DIR) into the landing zone and accounts
	$(PY) jobs/import_lastfm.py --source $(LASTFM_DIR) $(ARGS)

eval-lastfm: services-up ## Last.fm 2K benchmark: pipeline through gold, ALS vs popularity at K=10
	$(WITH_SECRET) $(PY) jobs/eval_lastfm.py --source $(LASTFM_DIR) $(ARGS)

train: services-up ## train ALS on gold/interactions (search, MLflow run, register, promote)
	$(WITH_SECRET) $(PY) jobs/train.py $(ARGS)

recommend: services-up ## batch top-K for every model alias the A/B experiment serves -> gold/recommendations
	$(PY) jobs/recommend.py $(ARGS)

publish: services-up ## publish gold/recommendations to Redis as a new version, switched live atomically
	$(PY) jobs/publish.py $(ARGS)

rollback: services-up ## switch Redis back to the previous published version
	$(PY) jobs/publish.py --rollback $(ARGS)

pii-scan: services-up ## search silver, gold (all kept versions), PostgreSQL, Redis, MLflow and ARGS="--log FILE" for PII; exit 4 on any
	@$(PY) jobs/pii_scan.py $(ARGS)

token: setup ## print an API bearer token: USER_ID=<id> for that user, else a service token that may POST /v1/events
	@$(PY) jobs/mint_token.py $(if $(USER_ID),--user-id $(USER_ID),--service cli) $(ARGS)

serve: services-up ## the recommendations API on serving.host:serving.port (docs at /docs)
	$(WITH_SECRET) $(PY) jobs/serve.py $(ARGS)

feedback: services-up ## label impressions with clicks, CTR, the A/B analysis (gold/feedback, gold/ctr, gold/ab_results)
	$(PY) jobs/feedback.py $(ARGS)

train-reranker: services-up ## learn which impression features drive clicks; register the re-ranker
	$(PY) jobs/train_reranker.py $(ARGS)

refresh: services-up ## the incremental chain a scheduler runs (ingest .. publish; trains when model.retrain_every_h passed)
	@$(WITH_SECRET) $(PY) jobs/refresh.py $(ARGS)

forget: services-up ## forget USER_ID=<id> (or users deleted at the source) everywhere: landing, lake, stores, MLflow; then VACUUM
	@$(WITH_SECRET) $(PY) jobs/forget.py $(if $(USER_ID),--user-id $(USER_ID)) $(ARGS)

maintain: services-up ## compact small files and VACUUM every lake table (lake.retention_hours; refuses one too short for the monitor)
	$(PY) jobs/maintain.py $(ARGS)

migrate: setup ## bring stored lake tables to their declarations in recsys/tables.py (adds, drops, casts columns)
	$(PY) jobs/migrate.py $(ARGS)

monitor: services-up ## drift checks against the champion's training snapshot; exit 6 on an alert
	$(PY) jobs/monitor.py $(ARGS)

bench: bench-topk bench-publish bench-api ## top-K, publish and API (the API's after make demo; bench-pipeline, 40-95 min by the machine, and bench-layout run on their own)

bench-topk: setup ## top-K: blocked matmul vs recommendForAllUsers, cross join + window, numpy floor
	$(PY) benchmarks/bench_topk.py $(ARGS)

bench-pipeline: services-up ## every stage on U users x D days (default ~10 M lines): s, lines/s, peak RSS, cores busy, floor, refresh cost
	@$(WITH_SECRET) $(PY) benchmarks/bench_pipeline.py $(ARGS)

bench-layout: setup ## silver/events partitioned vs liquid-clustered by event date: appends, dedupe, window reads, OPTIMIZE
	$(PY) benchmarks/bench_layout.py $(ARGS)

bench-publish: services-up ## publish throughput vs redis-benchmark SET with the same value size
	$(PY) benchmarks/bench_publish.py $(ARGS)

bench-api: services-up ## API throughput and p50/p99 under wrk at 1/8/32/128 connections, 1 and 2 workers, with the /healthz ceiling (serves what make demo published: run it first)
	$(WITH_SECRET) $(PY) benchmarks/bench_api.py $(ARGS)

wheel: setup ## build dist/recsys-*.whl to ship with spark-submit --py-files
	$(UV) build --wheel -o dist

clean: services-down ## stop local servers and remove all local state (.state, .jars, build output)
	rm -rf .state .jars build dist *.egg-info
