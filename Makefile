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
# post-training quantization and its activation range, digits, shapes, cost, export, evaluation) ->
# bench/RESULTS.md; BENCH_ARGS="--steps cost" reruns some steps; a stopped step resumes. On 2
# CPU cores a Fashion-MNIST float recipe takes 4.6-5.4 minutes an epoch at one thread (runs of
# 8, 12, 18 and 27 epochs: 5-6 h of one core per network); a Fashion-MNIST fine-tuning run
# about 3.7 min of one slot at 2 jobs with the fake-quantized evaluation (the choices step's
# first 35 runs), 2.5 min without it (trainer.eval_quant=false: the choices step's last 90
# runs took 1.9 h), so the choices step's 204 runs take about 5.4 h and the accuracy step's
# 200 about 4-5 h (its longer-budget runs fine-tune 5x as long; an estimate, not yet a timed
# whole step); the cost steps about 15 min.
BENCH_ARGS ?=
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/make_results.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check gdrq_bench tests bench
	$(BIN)/ruff format --check gdrq_bench tests bench
	$(BIN)/lint-imports  # the layer contracts in pyproject.toml

# Two pytest workers of one torch thread each: the slowest tests run gdrq-run in processes of
# their own (forked from a forkserver that imported it once: tests/cli_runner.py), mostly
# single-threaded work, so two at once fill 2 cores better than one with 2 threads;
# worksteal hands the slow files' tests to whichever worker is idle; the 15 slowest tests are
# listed at the end, so a CI log shows where the suite's time goes.
# The docs site from docs/ (mkdocs.yml): --strict fails on a broken link or anchor, or a page
# missing from the navigation; tests/test_docs.py checks what the pages show against the code.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint docs
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

clean:
	rm -rf outputs multirun .pytest_cache site
