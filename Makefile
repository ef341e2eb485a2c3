# Tally — developer commands. `make help` lists them.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
FUNCS_VENV := functions/venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help setup lint unit integration test sweep clean
SWEEP_ARGS ?=

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt functions/requirements.txt
	@command -v $(PY) >/dev/null || { echo "$(PY) is required (the functions run on python311)"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(FUNCS_VENV)/.installed: functions/requirements.txt
	$(PY) -m venv $(FUNCS_VENV)
	$(FUNCS_VENV)/bin/pip install --quiet --disable-pip-version-check -r functions/requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(BIN)/.installed $(FUNCS_VENV)/.installed node_modules/.installed ## Install everything (idempotent)

lint: $(BIN)/.installed ## ruff and mypy
	$(BIN)/ruff check functions tests scripts
	$(BIN)/ruff format --check functions tests scripts
	$(BIN)/mypy

unit: $(BIN)/.installed ## Unit tests (no emulator)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: setup ## Integration tests against the emulator suite
	./scripts/with-emulators $(BIN)/pytest tests/integration $(PYTEST_ARGS)

test: lint unit integration ## Lint, unit tests, integration tests

sweep: $(BIN)/.installed ## Complete idle sessions once (emulator if FIRESTORE_EMULATOR_HOST is set, else ADC)
	cd functions && ../$(BIN)/python -m tally.cli sweep $(SWEEP_ARGS)

clean: ## Remove installed tools and caches
	rm -rf $(VENV) $(FUNCS_VENV) node_modules .emulators .mypy_cache .ruff_cache .pytest_cache
