"""The registry of quantization methods: GDRQ, its ablations and the baselines (METHOD.md 7)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gdrq_bench.quant.act_quant import (
    ActQuantizer,
    FixedClipAct,
    LearnedAct,
    MinMaxAct,
    ScaleClipAct,
)
from gdrq_bench.quant.choices import SpecError
from gdrq_bench.quant.spec import QuantSpec
from gdrq_bench.quant.weight_quant import (
    DorefaWeightQuantizer,
    GroupWeightQuantizer,
    WeightQuantizer,
)

# (spec, bits, out_channels, groups) -> weight quantizer
WeightFactory = Callable[[QuantSpec, int, int, int], WeightQuantizer]
ActFactory = Callable[[QuantSpec, int], ActQuantizer]


@dataclass(frozen=True)
class Method:
    weight: WeightFactory
    act: ActFactory
    scale_clip: bool  # has Scale-Clip, so the reshape phase changes the model
    grouped: bool  # honours spec.groups; other methods quantize weights per tensor
    # the method that quantizes the first and last layers when they are not at the same bits
    # as the others: Scale-Clip reshapes the low-bit layers only
    edge: str | None = None


def _group_quantizer(alpha: str | None, scale_clip: bool, lsq_init: bool = False) -> WeightFactory:
    def build(spec: QuantSpec, bits: int, out_channels: int, groups: int) -> WeightQuantizer:
        return GroupWeightQuantizer(
            bits,
            out_channels,
            groups,
            spec,
            alpha_mode=alpha,
            scale_clip=scale_clip,
            lsq_init=lsq_init,
        )

    return build


def _scale_clip_act(spec: QuantSpec, bits: int) -> ActQuantizer:
    return ScaleClipAct(bits, spec.k_a, spec.act_momentum, spec.act_stat)


def _dorefa_weights(spec: QuantSpec, bits: int, out_channels: int, groups: int) -> WeightQuantizer:
    return DorefaWeightQuantizer(bits, grad_outside=spec.weight_grad == "pass")


METHODS: dict[str, Method] = {
    "gdrq": Method(
        _group_quantizer(None, scale_clip=True),
        _scale_clip_act,
        scale_clip=True,
        grouped=True,
        edge="groups_only",
    ),
    "scale_clip_only": Method(
        _group_quantizer("scale_clip", scale_clip=True),
        _scale_clip_act,
        scale_clip=True,
        grouped=False,
        edge="minmax",
    ),
    "groups_only": Method(
        _group_quantizer(None, scale_clip=False),
        lambda spec, bits: MinMaxAct(bits, spec.act_momentum),
        scale_clip=False,
        grouped=True,
    ),
    "minmax": Method(
        _group_quantizer("max", scale_clip=False),
        lambda spec, bits: MinMaxAct(bits, spec.act_momentum),
        scale_clip=False,
        grouped=False,
    ),
    "lsq": Method(
        _group_quantizer("learned", scale_clip=False, lsq_init=True),
        lambda spec, bits: LearnedAct(bits, "lsq"),
        scale_clip=False,
        grouped=False,
    ),
    "pact": Method(
        _dorefa_weights,
        lambda spec, bits: LearnedAct(bits, "pact"),
        scale_clip=False,
        grouped=False,
    ),
    "dorefa": Method(
        _dorefa_weights,
        lambda spec, bits: FixedClipAct(bits),
        scale_clip=False,
        grouped=False,
    ),
}


def get_method(name: str) -> Method:
    """The method called `name`; the registry, not QuantSpec, knows which names exist."""
    if name not in METHODS:
        raise SpecError("method", name, f" is unknown: use one of {sorted(METHODS)}")
    return METHODS[name]


def edge_method(name: str) -> Method:
    """The method of the first and last layers when they take their own bit-width."""
    method = get_method(name)
    return get_method(method.edge) if method.edge else method
