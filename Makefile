# Tally — developer commands. `make help` lists them.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
FUNCS_VENV := functions/venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Emulator suites for the integration tests, one per pytest-xdist process (1: one process, no xdist).
# Two did not help on 2 cores: the second suite's CPU (+72 CPU-s) ate what running in parallel saved.
SUITES ?= 1
SERVE ?= 1
CHROMIUM ?= /usr/bin/chromium
WEB_BUNDLE := web/dist/app.js
JS := clients/js

.DEFAULT_GOAL := help
# pytest keeps its assertion rewriting of test modules and plugins (hypothesis's and anyio's 100
# modules: 2-3 s of CPU in every pytest process) in __pycache__, and Python its compiled modules;
# an environment with PYTHONDONTWRITEBYTECODE set would redo both in every process.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup lint unit integration rules-test test sweep reconcile fold import-legacy migrate export demo screenshot bench clean
BENCH_ARGS ?=
SWEEP_ARGS ?=
MONTH ?=
FIX ?=
DEEP ?=
CSV ?=
DRY ?=
OUT ?=
RULES ?= firestore.rules

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt functions/requirements.txt pyproject.toml clients/python/pyproject.toml
	@command -v $(PY) >/dev/null || { echo "$(PY) is required (the functions run on python311)"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . -e clients/python
	touch $@

$(FUNCS_VENV)/.installed: functions/requirements.txt
	$(PY) -m venv $(FUNCS_VENV)
	$(FUNCS_VENV)/bin/pip install --quiet --disable-pip-version-check -r functions/requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(WEB_BUNDLE): $(wildcard web/src/*.js) node_modules/.installed
	node_modules/.bin/esbuild web/src/main.js --bundle --format=esm --minify --target=es2022 --log-level=warning --outfile=$@

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium and set CHROMIUM=/path/to/chromium"; exit 2; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

setup: $(BIN)/.installed $(FUNCS_VENV)/.installed node_modules/.installed $(JS)/node_modules/.installed $(WEB_BUNDLE) $(CHROMIUM) ## Install everything (idempotent)

lint: $(BIN)/.installed $(JS)/node_modules/.installed ## ruff and mypy (Tally, the kit, tests, scripts, the Python client); tsc (the JS client)
	$(BIN)/ruff check functions devkit tests scripts clients/python
	$(BIN)/ruff format --check functions devkit tests scripts clients/python
	$(BIN)/mypy
	cd clients/python && $(CURDIR)/$(BIN)/mypy
	cd $(JS) && npm run --silent lint

unit: $(BIN)/.installed $(JS)/node_modules/.installed ## Unit tests (no emulator): Tally's and the Python and JS clients'
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)
	$(BIN)/pytest clients/python -m "not emulator" -q $(PYTEST_ARGS)
	cd $(JS) && npm test --silent

integration: setup ## Integration and browser tests against the emulator suite (SUITES=N suites at once), then the clients'
	TALLY_SUITES=$(SUITES) ./scripts/with-emulators bash -c '$(BIN)/pytest tests/integration $(if $(filter-out 1,$(SUITES)),-n $(SUITES) --dist loadfile) $(PYTEST_ARGS) && $(BIN)/pytest clients/python/tests/test_emulator.py -m emulator -q -p no:cacheprovider $(PYTEST_ARGS) && (cd $(JS) && npm run --silent test:emulator) && bash $(JS)/scripts/pack-check.sh'

# Lint and the unit tests run beside the integration tests at the lowest CPU priority, so they
# mostly take the CPU the integration tests leave idle while their requests wait on each other.
test: setup ## Lint and unit tests (Tally's and the client's; run while the emulators start), integration and browser tests
	@mkdir -p .emulators; { nice -n 19 $(MAKE) --no-print-directory lint && nice -n 19 $(MAKE) --no-print-directory unit; } > .emulators/unit.log 2>&1 & unit=$$!; \
	$(MAKE) --no-print-directory integration; integration=$$?; \
	wait $$unit; unit_status=$$?; echo "--- lint and unit tests (run alongside) ---"; cat .emulators/unit.log; \
	echo "make test: lint and unit tests exit $$unit_status, integration tests exit $$integration"; \
	[ $$unit_status -eq 0 ] && [ $$integration -eq 0 ]

demo: setup ## Seed 30 days of traffic, print the report, serve the dashboard (SERVE=0: report only)
	./scripts/with-emulators $(BIN)/python scripts/demo.py $(if $(filter 0,$(SERVE)),--no-serve,--serve)

screenshot: setup ## Refresh docs/dashboard.png and docs/user-page.png from the browser tests
	TALLY_SCREENSHOT=$(CURDIR)/docs/dashboard.png ./scripts/with-emulators $(BIN)/pytest tests/integration/test_dashboard.py -q

rules-test: setup ## Run Tally's security-rules matrix against a rules file (RULES=path, e.g. your app's merged rules)
	TALLY_RULES=$(abspath $(RULES)) TALLY_EMULATORS=auth,firestore ./scripts/with-emulators $(BIN)/pytest -q tests/integration/test_rules.py

bench: setup ## Benchmarks against the emulators; writes docs/benchmarks.md and .json
	./scripts/with-emulators $(BIN)/python scripts/bench.py $(BENCH_ARGS)

sweep: $(BIN)/.installed ## Complete idle sessions once (emulator if FIRESTORE_EMULATOR_HOST is set, else ADC)
	$(BIN)/python -m entrypoints.cli sweep $(SWEEP_ARGS)

reconcile: $(BIN)/.installed ## Check a month's aggregates against its steps (MONTH=YYYY-MM, FIX=1 repairs, DEEP=1 lifetimes too)
	$(BIN)/python -m entrypoints.cli reconcile $(if $(MONTH),--month $(MONTH)) $(if $(filter 1,$(FIX)),--fix) $(if $(filter 1,$(DEEP)),--deep)

import-legacy: $(BIN)/.installed ## Import the earlier systems' usage (CSV=path for an api_usage_log export; DRY=1: report only)
	$(BIN)/python -m entrypoints.cli import-legacy $(if $(CSV),--csv $(CSV)) $(if $(filter 1,$(DRY)),--dry-run)

migrate: $(BIN)/.installed ## Convert data written before v2 to the v2 layout (idempotent)
	$(BIN)/python -m entrypoints.cli migrate

export: $(BIN)/.installed ## Every user's totals for a month as CSV (MONTH=YYYY-MM, OUT=file; default stdout)
	$(BIN)/python -m entrypoints.cli export $(if $(MONTH),--month $(MONTH)) $(if $(OUT),--out $(OUT))

fold: $(BIN)/.installed ## Fold a month's platform shards into its rollup now (MONTH=YYYY-MM)
	$(BIN)/python -m entrypoints.cli fold $(if $(MONTH),--month $(MONTH))

clean: ## Remove installed tools and caches
	rm -rf $(VENV) $(FUNCS_VENV) node_modules web/dist .emulators .mypy_cache .ruff_cache .pytest_cache $(JS)/node_modules $(JS)/dist $(JS)/dist-test $(JS)/dist-emulator
