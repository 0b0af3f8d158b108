"""In-process checks of the run's bookkeeping: equal fine-tuning budgets (trainer.equal_budget:
every method trains as many epochs after the float stage; one without a reshape stage spends
them all in QAT), the float model's cache key and identity."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir

from gdrq_bench.config import CONFIG_DIR
from gdrq_bench.run.budget import finetune_epochs, finetune_stages, stage_epochs
from gdrq_bench.run.fp import weights_hash
from gdrq_bench.run.keys import float_cache_key
from gdrq_bench.run.spec import build_spec


def _config(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("method", "equal", "reshape", "qat"),
    [
        ("gdrq", True, 2, 4),
        ("scale_clip_only", True, 2, 4),
        ("minmax", True, 0, 6),
        ("lsq", True, 0, 6),
        ("groups_only", True, 0, 6),
        ("minmax", False, 0, 4),
        ("gdrq", False, 2, 4),
    ],
)
def test_every_method_fine_tunes_the_same_epochs(method, equal, reshape, qat):
    cfg = _config(f"method={method}", f"trainer.equal_budget={str(equal).lower()}")
    spec = build_spec(cfg)
    assert (cfg.trainer.reshape.epochs, cfg.trainer.qat.epochs) == (2, 4)
    trained_reshape = stage_epochs(cfg, spec, "reshape") if reshape else 0
    assert (trained_reshape, stage_epochs(cfg, spec, "qat")) == (reshape, qat)
    assert finetune_epochs(cfg, spec) == reshape + qat


@pytest.mark.parametrize(
    ("overrides", "stages", "qat"),
    [
        ((), ["qat"], 6),
        (("method.scale_clip_8bit=true",), ["reshape", "qat"], 4),
        (("bits=w4a8",), ["reshape", "qat"], 4),
    ],
)
def test_without_scale_clip_8bit_an_8bit_run_spends_its_reshape_epochs_in_qat(
    overrides, stages, qat
):
    """At W8A8 without method.scale_clip_8bit (the default) no layer is reshaped: no reshape
    stage, its epochs go to QAT, as for a method without Scale-Clip (W4A8 still reshapes)."""
    cfg = _config("method=gdrq", "bits='8'", *overrides)
    spec = build_spec(cfg)
    assert finetune_stages(spec) == stages
    assert stage_epochs(cfg, spec, "qat") == qat
    assert finetune_epochs(cfg, spec) == 6


def test_a_float_run_fine_tunes_nothing():
    cfg = _config("bits='32'")
    assert finetune_epochs(cfg, build_spec(cfg)) == 0


def test_float_cache_key_holds_the_thread_count_in_effect() -> None:
    """The thread count changes CPU rounding, so the float model: the key follows the count in
    effect, whether set by trainer.threads or left to torch (OMP_NUM_THREADS)."""
    default, explicit = _config(), _config("trainer.threads=1")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = float_cache_key(default)
        assert float_cache_key(explicit) == one  # the same count, said or not
        torch.set_num_threads(2)
        assert float_cache_key(default) != one
    finally:
        torch.set_num_threads(previous)


def test_weights_hash_tells_float_models_apart() -> None:
    torch.manual_seed(0)
    first = torch.nn.Linear(3, 2)
    same = copy.deepcopy(first)
    assert weights_hash(first) == weights_hash(same) and len(weights_hash(first)) == 12
    with torch.no_grad():
        same.bias[0] += 1e-6
    assert weights_hash(first) != weights_hash(same)
