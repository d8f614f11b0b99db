# Two commands matter: `make serve` and `make test`. Both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

OPENCODE_VERSION := 1.18.33
TOOLS := .tools
OPENCODE_DIR := $(TOOLS)/opencode
OPENCODE := $(OPENCODE_DIR)/node_modules/.bin/opencode
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/uv/bin/uv)
PYTEST_WORKERS ?= 2

export UV_LINK_MODE ?= copy

.PHONY: help setup postgres-server serve test lint unit e2e demo bench docs build smoke clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(TOOLS)/uv/bin/uv:
	python3 -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups --all-extras
	@touch $@

$(OPENCODE):
	@command -v npm >/dev/null || { echo "npm (Node.js >= 20) is required to install OpenCode"; exit 1; }
	npm install --no-audit --no-fund --silent --prefix $(OPENCODE_DIR) opencode-ai@$(OPENCODE_VERSION)
	@$(OPENCODE) --version

setup: .venv/.synced $(OPENCODE) ## install Python deps (uv) and the pinned OpenCode (npm)

# The PostgreSQL tests start a throwaway server from the Debian package's binaries.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { \
	    echo "The PostgreSQL tests need the Debian package postgresql (run as root or install it)"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

serve: setup ## install everything, then run the service with a managed OpenCode and SQLite
	@mkdir -p .data
	@if [ -z "$$A2A_BEARER_TOKEN" ] && [ ! -s .data/a2a-token ]; then \
	  umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > .data/a2a-token; fi
	@[ -n "$$A2A_BEARER_TOKEN" ] || echo "A2A_BEARER_TOKEN not set: using the token in .data/a2a-token"
	A2A_BEARER_TOKEN="$${A2A_BEARER_TOKEN:-$$(cat .data/a2a-token)}" \
	  OPENCODE_BIN="$${OPENCODE_BIN:-$(abspath $(OPENCODE))}" \
	  $(UV) run --frozen opencode-a2a-server serve

test: setup postgres-server lint ## install everything, lint, then run the whole test suite
	OPENCODE_BIN="$(abspath $(OPENCODE))" $(UV) run --frozen pytest -n $(PYTEST_WORKERS) --dist loadfile -q

lint: .venv/.synced ## ruff and mypy
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen mypy

unit: .venv/.synced ## unit tests only
	$(UV) run --frozen pytest tests/unit -q

e2e: setup postgres-server ## end-to-end tests only
	OPENCODE_BIN="$(abspath $(OPENCODE))" $(UV) run --frozen pytest tests/e2e -n $(PYTEST_WORKERS) --dist loadfile -q

demo: setup ## run the whole stack offline on the scripted model and stream one exchange
	OPENCODE_BIN="$(abspath $(OPENCODE))" $(UV) run --frozen python -m opencode_a2a_server.testing.demo

bench: setup ## benchmark direct OpenCode vs the adapter (BENCH_ARGS="--peer" adds opencode-a2a 1.4.0)
	OPENCODE_BIN="$(abspath $(OPENCODE))" $(UV) run --frozen python -m bench.run $(BENCH_ARGS)

docs: .venv/.synced ## regenerate the extension-method table in docs/guide.md from the registry
	$(UV) run --frozen python -m opencode_a2a_server.extensions.methods

build: .venv/.synced ## build the wheel and sdist into dist/
	$(UV) build --out-dir dist

clean: ## remove build output and caches (keeps .data)
	rm -rf dist build .pytest_cache .mypy_cache .ruff_cache
