# Two set-up commands (see README): `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CONFIG ?= config/gateway.toml
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the test suite drives for real: a browser for the tracker tests,
# database servers for the sink and shared-state tests, libfaketime to cross midnight.
TEST_DEBS := chromium clickhouse-server redis-server faketime

.PHONY: run test venv test-venv debs bench shields-eval geo-bench tracker clean loadtest

$(VENV)/bin/activate:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed: installing Debian's python3-venv"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed: $(VENV)/bin/activate pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

run: venv
	@$(VENV)/bin/edge-gateway geo install --if-missing --config $(CONFIG) || \
	  echo "warning: no geo database could be installed; the gateway runs without country/region/city"
	$(VENV)/bin/edge-gateway serve --config $(CONFIG)

debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test: debs test-venv
	$(PY) -m pytest -q

bench: test-venv
	$(PY) bench/bench_gateway.py

shields-eval: test-venv
	$(PY) bench/shields_eval.py

geo-bench: test-venv
	$(PY) bench/bench_geo.py

# Rebuild tracker_js/dist/script.js (committed, so `make run` needs no Node): npm registry only.
tracker:
	cd tracker_js && npm ci --no-audit --no-fund && node build.mjs

# Locust mix against a fresh gateway on loopback, pass/fail (docs/loadtesting.md).
# Options: make loadtest ARGS="--run-time 30s --users 100", ARGS="--break shields".
loadtest: venv
	@[ $(VENV)/.installed-load -nt pyproject.toml ] || { $(PIP) install -q -e '.[load]' && touch $(VENV)/.installed-load; }
	$(PY) loadtests/run.py $(ARGS)

clean:
	rm -rf $(VENV) data build *.egg-info
