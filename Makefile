# The two commands of the README:
#   make run    install and start the demo server (no API key, no internet needed at run time)
#   make test   install everything the tests need and run the whole suite (lint, types, tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run serve install install-dev node-deps system-deps test pytest lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## Start the demo: anonymous guests, the built-in local model simulator. Open http://HOST:PORT/
run: install
	$(BIN)/python -m server --demo --host $(HOST) --port $(PORT)

## Start a real server (set OPENROUTER_API_KEY and JWT_SECRET, or use secrets.toml)
serve: install
	$(BIN)/python -m server --host $(HOST) --port $(PORT)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

node-deps: node_modules/.package-lock.json

## Debian packages the tests use: Chromium for the page tests, Redis, Node.js
system-deps:
	@bash .ci/system-deps

test: install-dev node-deps system-deps lint pytest

pytest:
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-dev node-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts
