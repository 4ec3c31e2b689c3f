# The two commands of the README:
#   make run    install and start the demo server (no API key, no internet needed at run time)
#   make test   install everything the tests need and run the whole suite (lint, types, tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run serve token install install-dev node-deps system-deps test test-latest pytest chaos lint format bench lock clean

# Every install comes from uv.lock (`uv sync --locked`: a lock that no longer matches
# pyproject.toml is an error, never a silent re-resolve). uv itself is pinned with hashes
# in scripts/uv-requirements.txt and lives in its own small venv.
UV_VENV ?= .venv-uv
UV := $(UV_VENV)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
SYNC := $(UV) sync --locked --python $(PYTHON) --quiet

$(UV): scripts/uv-requirements.txt
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes \
		-r scripts/uv-requirements.txt
	@touch $@

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(SYNC) --no-dev --inexact  # never removes the dev tools a `make test` installed
	@touch $@

$(VENV)/.installed-dev: pyproject.toml uv.lock | $(UV)
	$(SYNC)
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## Start the demo: anonymous guests, the built-in local model simulator. Open http://HOST:PORT/
run: install
	$(BIN)/python -m server --demo --host $(HOST) --port $(PORT)

## Start a real server (set OPENROUTER_API_KEY and JWT_SECRET, or use secrets.toml)
serve: install
	$(BIN)/python -m server --host $(HOST) --port $(PORT)

## A token for scripts: a guest token from the running demo (`make run`; POST /auth/guest),
## or with SUB=alice (and JWT_SECRET set) one minted here. `make -s token` prints only the token.
token: install
	@$(BIN)/python -m server --host $(HOST) --port $(PORT) token \
		$(if $(SUB),--sub $(SUB) --ttl $(or $(TTL),1h),--guest)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# The official Engine.IO / Socket.IO protocol suites (tests/conformance), each with its lock
CONFORMANCE_SUITES := tests/conformance/engineio tests/conformance/socketio

%/node_modules/.package-lock.json: %/package.json %/package-lock.json
	cd $* && npm ci --no-audit --no-fund

node-deps: node_modules/.package-lock.json \
	$(addsuffix /node_modules/.package-lock.json,$(CONFORMANCE_SUITES))

## Debian packages the tests use: Chromium for the page tests, Redis, Node.js, nginx
system-deps:
	@bash .ci/system-deps

test: install-dev node-deps system-deps lint pytest

## The suite with branch coverage; `make coverage-report` prints it per package again
pytest:
	$(BIN)/pytest --cov --cov-report=term --cov-report=json:test-artifacts/coverage.json
	$(BIN)/python scripts/coverage_summary.py test-artifacts/coverage.json

## The fault tests of issue 16 on their own (a private Redis is stopped and killed, a node
## killed, a client stops reading…): one line per fault at the end, held or not and what was lost
chaos: install-dev
	$(BIN)/pytest -m chaos tests/chaos

lint: node-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	node_modules/.bin/tsc --noEmit -p tsconfig.json   # JSDoc types of the JS client

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## The benchmark (bench/README.md); e.g. `make bench BENCH_ARGS=--scale` for 1/2/4 processes on Redis
bench: install-dev node-deps
	$(SYNC) --group bench
	$(BIN)/python -m bench $(BENCH_ARGS)

## Update the lock to the newest versions pyproject.toml allows (then run make test)
lock: | $(UV)
	$(UV) lock --upgrade

## The suite against the newest releases inside pyproject.toml's ranges, in .venv-latest
## (not part of `make test`: drift shows here as one failing job, never as a broken clone)
test-latest: node-deps system-deps | $(UV)
	bash .ci/latest

clean:
	rm -rf $(VENV) $(VENV)-latest $(UV_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts
