"""GDRQ in pure PyTorch: quantizers, Scale-Clip, groups, BN folding, baselines, statistics.

Knows nothing of Hydra, tasks, data sets or files.
"""

from gdrq_bench.quant.convert import (
    QuantScope,
    commit_scale_clip,
    quantize_model,
    quantized_layers,
)
from gdrq_bench.quant.fake_quant import FLOAT_BITS, check_bits, fake_quantize, level_range
from gdrq_bench.quant.fold import fold_model, verify_fold
from gdrq_bench.quant.methods import METHODS, get_method
from gdrq_bench.quant.modes import CLIP, FLOAT, QUANT, set_mode
from gdrq_bench.quant.spec import QuantSpec
from gdrq_bench.quant.stats import (
    kurtosis,
    layer_weight_stats,
    quantized_loss,
    recording_activation_clips,
)

__all__ = [
    "CLIP",
    "FLOAT",
    "FLOAT_BITS",
    "METHODS",
    "QUANT",
    "QuantScope",
    "QuantSpec",
    "check_bits",
    "commit_scale_clip",
    "fake_quantize",
    "fold_model",
    "get_method",
    "kurtosis",
    "layer_weight_stats",
    "level_range",
    "quantize_model",
    "quantized_layers",
    "quantized_loss",
    "recording_activation_clips",
    "set_mode",
    "verify_fold",
]
