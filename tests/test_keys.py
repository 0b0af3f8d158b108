"""In-process checks of a run's keys (run/keys.py): what splits the float model's cache, what
splits a run's checkpoints, and what makes two results rows one configuration (spec_hash)."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gdrq_bench.config import CONFIG_DIR, quote_numeric_choice
from gdrq_bench.config.schema import TrainerConfig
from gdrq_bench.quant.methods import own_methods
from gdrq_bench.run.keys import (
    AFTER_FLOAT_TRAINER_KEYS,
    FINETUNE_RECIPE_KEYS,
    FLOAT_TRAINER_KEYS,
    float_cache_key,
    float_scores_key,
    run_key,
    spec_hash,
)
from gdrq_bench.run.report import spec_columns
from gdrq_bench.run.spec import build_spec


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
        "trainer.fold_check_inputs=64",
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


def _spec_hash(*overrides: str) -> str:
    cfg = _config(*overrides)
    return spec_hash(cfg, build_spec(cfg))


def test_the_fine_tuning_recipe_is_made_of_trainer_keys() -> None:
    keys = {field.name for field in dataclasses.fields(TrainerConfig)}
    assert set(FINETUNE_RECIPE_KEYS) <= keys


@pytest.mark.parametrize(
    "same, other",
    [
        (["method=minmax"], ["method=minmax", "method.k_w=2"]),  # minmax reads no k_w
        (["method=lsq"], ["method=lsq", "grouping=g8"]),  # nor lsq the groups
        ([], ["seed=4"]),  # seeds are the repeats of a configuration
        ([], ["trainer.threads=2", "trainer.progress=false", "results_dir=x"]),
        (["bits=4"], ["bits.w=4", "bits.a=4"]),  # another spelling of the same knobs
    ],
)
def test_what_changes_no_number_of_the_method_shares_the_spec_hash(
    same: list[str], other: list[str]
) -> None:
    assert _spec_hash(*same) == _spec_hash(*other)


@pytest.mark.parametrize(
    "override",
    [
        "method.k_w=2",
        "method.act_stat=mean_abs",
        "grouping=g8",
        "bits=w2a4",
        "method=groups_only",
        "trainer.qat.lr=0.02",
        "trainer.finetune_batches=7",
        "trainer.equal_budget=false",
    ],
)
def test_an_effective_knob_or_the_recipe_splits_the_spec_hash(override: str) -> None:
    assert _spec_hash(override) != _spec_hash()


def test_an_outside_library_never_shares_a_methods_spec_hash() -> None:
    """Brevitas reads the bits alone: knobs it ignores do not split its hash, and no
    method's rows share it."""
    brevitas = _spec_hash("method=brevitas")
    assert brevitas == _spec_hash("method=brevitas", "method.k_w=2.0", "grouping=g8")
    assert brevitas != _spec_hash("method=brevitas", "bits=w2a4")
    assert brevitas not in {_spec_hash(f"method={name}") for name in own_methods()}


def test_a_row_fills_the_knobs_its_method_reads() -> None:
    gdrq = spec_columns(build_spec(_config()))
    minmax = spec_columns(build_spec(_config("method=minmax")))
    assert (gdrq["k_w"], gdrq["act_stat"], gdrq["groups"], gdrq["alpha_mode"]) == (
        3.0,
        "mse",
        4,
        "learned",
    )
    assert (minmax["k_w"], minmax["act_stat"], minmax["groups"], minmax["alpha_mode"]) == (
        "",
        "",
        1,
        "",
    )
    assert minmax["act_momentum"] == 0.1 and minmax["skip"] == ""
    assert spec_columns(build_spec(_config("method.skip=[fc,conv1]")))["skip"] == "fc;conv1"


@pytest.mark.parametrize("key_of", [float_cache_key, run_key])
def test_a_key_added_at_its_neutral_value_leaves_earlier_caches_valid(key_of) -> None:
    """dataset.holdout=0 does what configs did before the key existed: the float model and
    checkpoints cached then are found; holding images out splits both."""
    cfg = _config()
    earlier = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # no schema
    del earlier.dataset["holdout"]
    del earlier["plugins"]
    del earlier.trainer["fold_check_inputs"]
    assert key_of(cfg) == key_of(earlier)
    assert key_of(_config("dataset.holdout=100")) != key_of(cfg)


def _keys(*overrides: str) -> tuple[str, str, str]:
    cfg = _config(*overrides)
    return run_key(cfg), spec_hash(cfg, build_spec(cfg)), float_cache_key(cfg)


def test_calibration_settings_split_post_training_runs_only() -> None:
    """trainer.calibrate changes nothing a QAT run computes: its keys stay as they were
    before the key existed; under trainer.schedule=ptq it splits the run key and the spec
    hash, and no schedule splits the float model."""
    calibrate = "trainer.calibrate.act_range=max"  # not the default (mse)
    assert _keys(calibrate) == _keys("trainer.schedule=qat") == _keys()
    ptq = _keys("trainer.schedule=ptq")
    ptq_mse = _keys("trainer.schedule=ptq", calibrate)
    assert len({ptq[0], ptq_mse[0], _keys()[0]}) == 3
    assert len({ptq[1], ptq_mse[1], _keys()[1]}) == 3
    assert ptq[2] == ptq_mse[2] == _keys()[2]
    # a calibration key added later splits nothing at its default, and splits at another value
    assert _keys("trainer.schedule=ptq", "trainer.calibrate.bn_reestimate=false") == ptq
    assert _keys("trainer.schedule=ptq", "trainer.calibrate.bn_reestimate=true")[1] != ptq[1]


def test_other_fold_check_inputs_split_the_run_key_alone() -> None:
    """trainer.fold_check_inputs=256 is what runs checked before the key existed; another
    count changes the row's fold_err, so it splits the run's checkpoints, not the float model
    nor the spec hash (the same configuration, checked on other inputs)."""
    assert _keys("trainer.fold_check_inputs=256") == _keys()
    other = _keys("trainer.fold_check_inputs=32")
    assert other[0] != _keys()[0] and other[1:] == _keys()[1:]


@pytest.mark.parametrize(
    "override",
    ["bits=w2a4", "method=lsq", "trainer.qat.epochs=9", "seed=3", "trainer.schedule=ptq"],
)
def test_the_float_models_scores_are_shared_by_what_acts_after_it(override: str) -> None:
    assert float_scores_key(_config(override), "abc") == float_scores_key(_config(), "abc")


@pytest.mark.parametrize(
    "override",
    ["dataset.holdout=300", "trainer.max_eval_batches=2", "model=mobilenet_v2_cifar"],
)
def test_the_evaluation_set_or_model_splits_the_float_models_scores(override: str) -> None:
    assert float_scores_key(_config(override), "abc") != float_scores_key(_config(), "abc")
    assert float_scores_key(_config(), "abd") != float_scores_key(_config(), "abc")  # weights
