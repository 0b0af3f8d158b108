"""Equal fine-tuning budgets (trainer.equal_budget): every method trains as many epochs after
the float stage; one without a reshape stage spends them all in QAT."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from gdrq_bench.cli import CONFIG_DIR
from gdrq_bench.pipeline import build_spec, finetune_epochs, stage_epochs


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


def test_a_float_run_fine_tunes_nothing():
    cfg = _config("bits='32'")
    assert finetune_epochs(cfg, build_spec(cfg)) == 0
