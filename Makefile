# lmforge: `make quickstart` (set up and run the tour on SmolLM2), `make test` (set up and run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,curate,serve,explain,audit,export,ray,mlflow,llama
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup quickstart test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned and installed first: a looser requirement pulls several GB of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(BIN)/lmforge quickstart

test: setup
	$(BIN)/python -m pytest -q -n 2 --durations=15

test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not smollm2"

bench: setup
	$(BIN)/python benchmarks/eval_rolling.py

clean:
	rm -rf $(VENV) .pytest_cache .lmforge quickstart
