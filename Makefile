# One-command entry points. Both create the virtualenv when it is missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ARGS ?=
SWEEP ?= default
JOBS ?=
BOARD_ARGS ?=

.PHONY: install run sweep board bench test lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The bench extra (Brevitas) on top of the dev install.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $@

run: install
	$(BIN)/gdrq-run $(ARGS)

# A grid preset of conf/sweep/ (SWEEP=name), JOBS local jobs at once, then the leaderboard.
sweep: install
	$(BIN)/gdrq-sweep $(SWEEP) $(if $(JOBS),--jobs $(JOBS)) $(ARGS)
	$(BIN)/gdrq-board $(BOARD_ARGS)

board: install
	$(BIN)/gdrq-board $(BOARD_ARGS)

# Every step (float recipes, the validation choices, accuracy of every method and Brevitas,
# post-training quantization, digits, shapes, cost, export, evaluation) ->
# bench/RESULTS.md; BENCH_ARGS="--steps cost" reruns some steps; a stopped step resumes. On 2
# CPU cores a Fashion-MNIST float recipe takes 4.6-5.4 minutes an epoch at one thread (8 to 27
# epochs per network); the accuracy step's 200 runs of the issue-26 protocol are not timed
# yet (the earlier 99-run grid took 2 h 28 min at 2 jobs); the cost steps about 15 min.
BENCH_ARGS ?=
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/make_results.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check gdrq_bench tests bench
	$(BIN)/ruff format --check gdrq_bench tests bench
	$(BIN)/lint-imports  # the layer contracts in pyproject.toml

# Two pytest workers of one torch thread each: the slowest tests start gdrq-run processes,
# whose start-up is single-threaded, so two at once fill 2 cores better than one with 2
# threads; worksteal hands the slow files' tests to whichever worker is idle; the 15 slowest
# tests are listed at the end, so a CI log shows where the suite's time goes.
# The docs site from docs/ (mkdocs.yml): --strict fails on a broken link or anchor, or a page
# missing from the navigation; tests/test_docs.py checks what the pages show against the code.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint docs
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

clean:
	rm -rf outputs multirun .pytest_cache site
