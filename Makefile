# One command to set up and run the default comparison, one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup  ## the default comparison: configs/suites/quick.yaml
	$(BIN)/echoes compare

test: setup  ## the whole test suite
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf echoes-runs .pytest_cache
