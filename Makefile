# Every target does its own set-up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint types check bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/reconcile demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install
	$(BIN)/mypy reconcile

# The test command the README and CI run: lint, types, then the suite.
test: lint types
	$(BIN)/pytest -q

check: test

bench: install
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/repair.py

clean:
	rm -rf $(VENV) reconcile-demo .mypy_cache .ruff_cache .pytest_cache .hypothesis
