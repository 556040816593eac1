# The single entry point: `make serve` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.DEFAULT_GOAL := help

.PHONY: help install install-dev serve test lint format mypy pytest bench clean docker

help:
	@echo "make serve   start the emulator on 127.0.0.1:8123 (SQLite in .deferred-emulator/)"
	@echo "make test    ruff, mypy --strict and the test suite"
	@echo "make bench   the benchmark (see README, Performance)"

# deferred-client is not on PyPI yet: naming both in one pip command lets pip resolve it from ./client.
$(VENV)/.base: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./client -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q -e ./client -e '.[dev,gae]'
	touch $@

install: $(VENV)/.base

install-dev: $(VENV)/.dev

serve: install
	$(BIN)/deferred-emulator serve $(ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check emulator client tests

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format emulator client tests

mypy: install-dev
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint mypy pytest

bench: install-dev
	$(PY) bench/run.py

docker:
	docker build -f docker/Dockerfile -t deferred-emulator .

clean:
	rm -rf $(VENV) .deferred-emulator .mypy_cache .ruff_cache build *.egg-info client/build client/*.egg-info
