# Two set-up commands (see README): `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CONFIG ?= config/gateway.toml
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the test suite drives for real: browsers for the tracker and header tests
# (Chromium, Firefox ESR with NSS's certutil for its test CA), nginx as the TLS front, curl and
# wget among the HTTP clients, database servers for the sink and shared-state tests, libfaketime
# to cross midnight.
TEST_DEBS := chromium firefox-esr libnss3-tools nginx curl wget clickhouse-server redis-server faketime
# The HTTP load generator of the benchmarks.
BENCH_DEBS := wrk

.PHONY: run test lint venv test-venv load-venv debs build-debs bench-debs bench bench-server-api compare profile shields-eval geo-bench tracker console-js console-screenshots clean loadtest

$(VENV)/bin/activate:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed: installing Debian's python3-venv"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

# The request path's modules (gateway/compiled.py) are compiled to C with mypyc: the install is
# redone when one of them changes, so the compiled copies beside them are never older.
COMPILED := $(shell sed -n 's/^    "\([a-z_/]*\.py\)",$$/\1/p' gateway/compiled.py)

# Compiled copies of an earlier build (a module since left out would shadow its source).
CLEAN_SO := rm -f edge_tracker_gateway__mypyc.*.so && find gateway shields geo -name '*.so' -delete

# A C compiler and Python's headers, for that build.
build-debs:
	@command -v cc >/dev/null 2>&1 || { echo "installing a C compiler"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc libc6-dev; }
	@$(PYTHON) -c 'import sysconfig, pathlib, sys; sys.exit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists())' || { \
	  echo "installing Python's headers"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-dev; }

$(VENV)/.installed: $(VENV)/bin/activate pyproject.toml setup.py gateway/compiled.py $(COMPILED) | build-debs
	$(PIP) install -q --upgrade pip
	$(CLEAN_SO)
	EDGE_GATEWAY_COMPILE=1 $(PIP) install -q -e .
	touch $@

# An extra's requirements, one a line (`$(EXTRAS) test`): installed alone, since reinstalling the
# project with them would compile it again.
EXTRAS = $(PY) -c 'import sys, tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]]))'

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(EXTRAS) test > $(VENV)/test-requirements.txt
	$(PIP) install -q -r $(VENV)/test-requirements.txt
	touch $@

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

run: venv
	@$(VENV)/bin/edge-gateway geo install --if-missing --config $(CONFIG) || \
	  echo "warning: the geo database or the ASN table could not be installed; the gateway runs without them"
	$(VENV)/bin/edge-gateway serve --config $(CONFIG)

# Installs the Debian packages named in $(1) that are missing.
define install_debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

debs:
	$(call install_debs,$(TEST_DEBS))

bench-debs:
	$(call install_debs,$(BENCH_DEBS))

# Everything the suite drives is installed first, so a test that finds it missing fails rather
# than skips (tests/prerequisites.py); pytest run by hand skips such tests instead.
test: debs test-venv lint
	GATEWAY_TEST_PREREQUISITES=required $(PY) -m pytest -q

# The layout's rules (import contracts in pyproject.toml, docs/architecture.md) and the types.
lint: test-venv
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy --strict gateway shields geo

# Gateway vs bare Sanic, same workers, same run: make bench ARGS="--workers 2".
bench: test-venv bench-debs
	$(PY) bench/bench_gateway.py $(ARGS)

# The server-side events API alone: 1000-event batches into the spool, events per second per worker.
bench-server-api: test-venv bench-debs
	$(PY) bench/bench_server_api.py $(ARGS)

# This work tree's gateway against another commit's, in one run: make compare ARGS="--against main".
compare: test-venv bench-debs
	$(PY) bench/compare.py $(ARGS)

# Where a worker's time goes under load (py-spy): make profile ARGS="--seconds 20".
profile: test-venv load-venv bench-debs
	$(PY) bench/profile_gateway.py $(ARGS)

shields-eval: test-venv
	$(PY) bench/shields_eval.py

geo-bench: test-venv
	$(PY) bench/bench_geo.py

# Re-vendor the web console's chart library into gateway/static/console/ (npm registry only).
console-js:
	cd console_js && npm ci --no-audit --no-fund && node build.mjs

# docs/img/console-*.png from a real gateway fed real events, in headless Chromium (~5 min).
console-screenshots: test-venv
	$(PY) tests/browser/console_screenshots.py

# Rebuild gateway/static/script.js (committed package data, so `make run` needs no Node): npm registry only.
tracker:
	cd tracker_js && npm ci --no-audit --no-fund && node build.mjs

# Locust mix against a fresh gateway on loopback, pass/fail (docs/loadtesting.md).
# Options: make loadtest ARGS="--run-time 30s --users 100", ARGS="--break shields".
load-venv: venv
	@[ $(VENV)/.installed-load -nt pyproject.toml ] || { \
	  $(EXTRAS) load > $(VENV)/load-requirements.txt && \
	  $(PIP) install -q -r $(VENV)/load-requirements.txt && touch $(VENV)/.installed-load; }

loadtest: load-venv
	$(PY) loadtests/run.py $(ARGS)

clean:
	rm -rf $(VENV) data build *.egg-info
	$(CLEAN_SO)
