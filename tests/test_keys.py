"""In-process checks of the two cache keys: what splits the float model's cache and what splits
a run's checkpoints (run/keys.py)."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir

from gdrq_bench.cli import CONFIG_DIR, quote_numeric_choice
from gdrq_bench.config import TrainerConfig
from gdrq_bench.run.keys import (
    AFTER_FLOAT_TRAINER_KEYS,
    FLOAT_TRAINER_KEYS,
    float_cache_key,
    run_key,
)


def _config(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[quote_numeric_choice(o) for o in overrides])


def test_every_trainer_key_is_placed_once() -> None:
    """A new trainer key must say whether it changes the float model."""
    keys = {field.name for field in dataclasses.fields(TrainerConfig)} - {"fp"}
    placed = [*FLOAT_TRAINER_KEYS, *AFTER_FLOAT_TRAINER_KEYS]
    assert sorted(placed) == sorted(keys)


@pytest.mark.parametrize(
    "override",
    [
        "bits=w2a4",
        "method=lsq",
        "grouping=g8",
        "trainer.qat.epochs=9",
        "trainer.fold_check_batches=3",
        "results_dir=elsewhere",
    ],
)
def test_what_acts_after_the_float_stage_shares_the_float_model(override: str) -> None:
    assert float_cache_key(_config(override)) == float_cache_key(_config())


@pytest.mark.parametrize(
    "override",
    ["fp_seed=3", "trainer.fp.epochs=2", "trainer.batch_size=32", "model=mobilenet_v2_cifar"],
)
def test_what_trains_the_float_model_splits_its_cache(override: str) -> None:
    assert float_cache_key(_config(override)) != float_cache_key(_config())


@pytest.mark.parametrize(
    "override",
    [
        "results_dir=elsewhere",
        "trainer.progress=false",
        "trainer.probes=false",
        "trainer.fused_kernels=false",
    ],
)
def test_where_and_how_a_run_reports_leaves_its_run_key(override: str) -> None:
    assert run_key(_config(override)) == run_key(_config())


@pytest.mark.parametrize("override", ["bits=w2a4", "method.k_w=2", "seed=1", "trainer.qat.lr=1"])
def test_what_changes_a_number_splits_the_run_key(override: str) -> None:
    assert run_key(_config(override)) != run_key(_config())
