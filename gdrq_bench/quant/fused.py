"""One-pass fake quantization with a fixed clip: C++ kernels built from csrc/ on first use.

The eager form of fake_quant._FixedClipQuantize makes six passes over its input forward
(divide, two compares and an and for the mask, clamp, round, multiply) and four backward
(multiply, the mask's conversion to floats, multiply, divide). At ResNet-18's sizes on a
2-core CPU these weight-sized passes are most of what GDRQ's training step costs over the float
step. The kernels do each direction in one pass of the same operations in the same order, so
values and gradients are the eager ones bit for bit (tests/test_fused.py).

They are compiled once per machine and checkout by torch.utils.cpp_extension (a C++ compiler
and ninja, about half a minute) into torch's extension cache (TORCH_EXTENSIONS_DIR, by
default ~/.cache/torch_extensions); where that fails, one warning says why and the eager form runs.
They serve CPU tensors of float32 or float64 whose step is one value or one per output filter;
anything else (CUDA tensors included) runs the eager form. `use_fused_kernels(False)` (gdrq-run:
trainer.fused_kernels=false) turns them off.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

SOURCE = Path(__file__).resolve().parent / "csrc" / "fixed_clip_quantize.cpp"
# -ffp-contract=off: no fused multiply-add, so each operation rounds as torch's does
FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]
# The vector instructions of the CPU capability torch found (it checks the same flags); one
# build per capability, so nodes of a cluster sharing a home folder never run another's build.
CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
    "AVX2": ["-mavx2"],
}
CAPABILITY = torch.backends.cpu.get_cpu_capability()
# One build per checkout too: torch runs the build (ninja) under a lock at every first use in
# a process, and a build file naming another checkout's source rebuilds it, so two checkouts
# sharing one build folder would rebuild it at each switch and wait on each other.
CHECKOUT = hashlib.sha1(str(SOURCE).encode()).hexdigest()[:8]
NAME = f"gdrq_fixed_clip_quantize_{CAPABILITY.lower()}_{CHECKOUT}"

_enabled = True
_built: ModuleType | None = None
_failed = False


def use_fused_kernels(enabled: bool) -> None:
    """Turn the fused kernels on (built at their first use) or off (the eager form)."""
    global _enabled
    _enabled = enabled


def _build() -> ModuleType | None:
    global _built, _failed
    if _built is None and not _failed:
        # its import warns that a CPU-only machine has no CUDA runtime: nothing here needs one
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils.cpp_extension import load

        print(
            "loading the fused fake-quantization kernels (the first run on a machine builds "
            "them: about half a minute)",
            file=sys.stderr,
        )
        try:
            _built = load(
                name=NAME,
                sources=[str(SOURCE)],
                extra_cflags=[*FLAGS, *CAPABILITY_FLAGS.get(CAPABILITY, [])],
                extra_ldflags=["-fopenmp"],
            )
        except Exception as error:  # no compiler, no ninja, a failed build: run eager
            _failed = True
            warnings.warn(
                f"the fused fake-quantization kernels could not be built ({error}); running "
                "the eager form (trainer.fused_kernels=false silences this)",
                stacklevel=2,
            )
    return _built


def kernels_for(x: Tensor, step: Tensor) -> ModuleType | None:
    """The built kernels if they are on and serve `x` with `step`, else None."""
    if not _enabled or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    one_value = step.numel() == 1
    per_row = step.dim() == x.dim() > 0 and step.shape[0] == x.shape[0] == step.numel()
    if step.dtype != x.dtype or not (one_value or per_row):
        return None
    return _build()
