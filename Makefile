# One-command entry points. Both create the virtualenv when it is missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/gdrq-run $(ARGS)

lint: install
	$(BIN)/ruff check gdrq_bench tests bench
	$(BIN)/ruff format --check gdrq_bench tests bench

test: lint
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

clean:
	rm -rf outputs multirun .pytest_cache
