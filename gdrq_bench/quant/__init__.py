"""GDRQ in pure PyTorch: quantizers, Scale-Clip, groups, BN folding, baselines, statistics.

Knows nothing of Hydra, tasks, data sets or files. A name is imported from its module on first
use (PEP 562): the config schema reads QuantSpec at gdrq-run's start-up, which must not wait
for torch, and spec.py and choices.py are the only modules free of it.
"""

from importlib import import_module
from typing import Any

_MODULE_OF = {
    "CLIP": "modes",
    "FLOAT": "modes",
    "FLOAT_BITS": "choices",
    "METHODS": "methods",
    "QUANT": "modes",
    "QuantScope": "convert",
    "QuantSpec": "spec",
    "SpecError": "choices",
    "check_bits": "choices",
    "commit_scale_clip": "convert",
    "fake_quantize": "fake_quant",
    "first_differing_layer": "fold",
    "fold_model": "fold",
    "get_method": "methods",
    "kurtosis": "stats",
    "layer_plan": "convert",
    "layer_weight_stats": "stats",
    "level_range": "fake_quant",
    "method_knobs": "methods",
    "own_methods": "methods",
    "quantize_model": "convert",
    "quantized_layers": "convert",
    "quantized_loss": "stats",
    "recording_activation_clips": "stats",
    "set_mode": "modes",
    "verify_fold": "fold",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
