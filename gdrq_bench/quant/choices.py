"""The values a QuantSpec field may take, and the error that names a bad one.

Free of torch, so that the config schema (config.py, read at gdrq-run's start-up) can be built
from QuantSpec without importing it; the quantizers import their choices from here.
"""

from __future__ import annotations

FLOAT_BITS = 32  # "not quantized"
MIN_BITS, MAX_BITS = 2, 8
PER_CHANNEL = "per_channel"  # spec.groups: one group per output filter

GROUP_STRATEGIES = ("sorted", "contiguous", "kmeans")
ALPHA_MODES = ("search", "scale_clip", "learned", "max")
WEIGHT_STATS = ("mean_abs", "std")
ACT_STATS = ("mean_abs", "max_abs", "mse")
CLIP_STYLES = ("clamp", "project")
WEIGHT_GRADS = ("clip", "pass")
FIRST_LAST_POLICIES = ("fp", "8", "same")


class SpecError(ValueError):
    """A bad value of the QuantSpec field `field`, as "field=value problem". A caller that
    knows the field by another name (a config key) rewords it with `named`."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field, self.value, self.problem = field, value, problem
        super().__init__(self.named(field))

    def named(self, name: str) -> str:
        return f"{name}={self.value!r}{self.problem}"


def check_bits(bits: object, name: str = "bits") -> int:
    """Return `bits` if it is a valid width (2..8, or 32 for 'not quantized'), else raise."""
    valid = isinstance(bits, int) and not isinstance(bits, bool)
    if not valid or not (bits == FLOAT_BITS or MIN_BITS <= bits <= MAX_BITS):
        raise SpecError(
            name,
            bits,
            f" is not a valid bit-width: use {MIN_BITS}..{MAX_BITS}, "
            f"or {FLOAT_BITS} for 'not quantized'",
        )
    return bits


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if str(value) not in allowed:
        raise SpecError(name, value, f" is unknown: use one of {allowed}")
