# Every target does its own set-up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test-deps demo test lint types check bench clean

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

# Outside programs the tests run for real (promtool, node_exporter, Pushgateway,
# systemd-analyze, tmux): installed from Debian when missing and we can, else one line.
test-deps:
	@.ci/test-deps

# The test command the README and CI run: lint, types, then the suite.
test: test-deps lint types
	$(BIN)/pytest -q

check: test

# The scale suite (100k and 1M faces on Qdrant Edge; under 10 minutes on 2 cores).
# Its worlds stay in bench/.worlds/ for the next run; `bench/suite.py --no-keep`
# deletes them. The 20k local-mode scripts (bench/audit.py, bench/repair.py) run by hand.
bench: install
	$(BIN)/pip install --quiet py-spy || echo "no py-spy: the profile uses pyinstrument if installed"
	$(BIN)/python bench/suite.py

clean:
	rm -rf $(VENV) reconcile-demo .mypy_cache .ruff_cache .pytest_cache .hypothesis
