"""The registry of quantization methods: GDRQ, its ablations and the baselines (docs/method.md 7),
and Brevitas's layers through the method hook (Method.build)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn

from gdrq_bench.quant.act_quant import (
    ActQuantizer,
    FixedClipAct,
    LearnedAct,
    MinMaxAct,
    ScaleClipAct,
)
from gdrq_bench.quant.choices import SpecError
from gdrq_bench.quant.group_clips import (
    ALPHA_CHOICES,
    GroupClip,
    LearnedClip,
    chosen_clip,
)
from gdrq_bench.quant.spec import QuantSpec
from gdrq_bench.quant.weight_quant import (
    DorefaWeightQuantizer,
    GroupWeightQuantizer,
    WeightQuantizer,
)

if TYPE_CHECKING:  # convert.py imports this module
    from gdrq_bench.quant.convert import QuantScope

# (spec, bits, out_channels, groups) -> weight quantizer
WeightFactory = Callable[[QuantSpec, int, int, int], WeightQuantizer]
ActFactory = Callable[[QuantSpec, int], ActQuantizer]


# The QuantSpec knobs a method reads, by what reads them (a results row leaves the others
# empty, and the spec hash leaves them out): every method's layers and weight gradient; the
# group quantizer's grouping and clip search; Scale-Clip; activation clips from a running
# statistic (min-max and Scale-Clip). tests/test_methods.py checks that a knob outside a
# method's set changes none of its numbers.
EVERY_METHOD_KNOBS = frozenset(
    {"method", "w_bits", "a_bits", "first_last_bits", "skip", "weight_grad"}
)
GROUP_KNOBS = frozenset(
    {"groups", "group_strategy", "regroup_every", "alpha", "alpha_every", "search_points"}
    | {"weight_stat"}  # the sorted and k-means groupings order filters by it
)
SCALE_CLIP_KNOBS = frozenset(
    {"k_w", "k_a", "weight_stat", "act_stat", "clip_style", "scale_clip_qat", "act_momentum"}
    | {"scale_clip_8bit"}
)
RUNNING_CLIP_KNOBS = frozenset({"act_momentum"})
# Knobs of the training stages alone (the activation clips Scale-Clip trains, how weights and
# clips move in training): a post-training run reads none of them, its activation clips come
# from trainer.calibrate (tests/test_ptq.py checks they change none of its numbers).
TRAINING_ONLY_KNOBS = frozenset(
    {"k_a", "act_stat", "act_momentum", "clip_style", "scale_clip_qat", "weight_grad"}
    | {"alpha_every", "regroup_every"}
)


# (float model, spec, scope, calibration inputs) -> the quantized model, for a method whose
# layers come from another library
ModelBuilder = Callable[[nn.Module, QuantSpec, "QuantScope", list[Tensor]], nn.Module]


@dataclass(frozen=True)
class Method:
    """A quantization method: gdrq_bench's layers with these quantizers (`weight`, `act`),
    or, through the hook `build`, another library's model, trained and reported by the same
    stages."""

    weight: WeightFactory | None
    act: ActFactory | None
    scale_clip: bool  # has Scale-Clip, so the reshape phase changes the model
    grouped: bool  # honours spec.groups; other methods quantize weights per tensor
    # the method that quantizes the first and last layers when they are not at the same bits
    # as the others: Scale-Clip reshapes the low-bit layers only
    edge: str | None = None
    running_clip: bool = False  # activation clips from a running statistic (act_momentum)
    build: ModelBuilder | None = None  # another library's quantized model (see ModelBuilder)
    folds: bool = True  # BN folds into its layers (quant/fold.py), and the model exports
    needs: tuple[str, ...] = ()  # the modules `build` imports, checked before training
    tasks: tuple[str, ...] | None = None  # the tasks it quantizes (None: every task)
    knobs: frozenset[str] | None = None  # the knobs an outside method reads (None: derived)
    weight_groups: int | str = 1  # the row's `groups` of a method that does not read it

    @property
    def own_knobs(self) -> frozenset[str]:
        """The QuantSpec knobs this method's own layers read."""
        if self.knobs is not None:
            return self.knobs
        return (
            EVERY_METHOD_KNOBS
            | (GROUP_KNOBS if self.grouped else frozenset())
            | (SCALE_CLIP_KNOBS if self.scale_clip else frozenset())
            | (RUNNING_CLIP_KNOBS if self.running_clip else frozenset())
        )


# (spec, bits, groups) -> the group quantizer's clip policy
ClipFactory = Callable[[QuantSpec, int, int], GroupClip]


def _group_quantizer(clip: ClipFactory, scale_clip: bool) -> WeightFactory:
    def build(spec: QuantSpec, bits: int, out_channels: int, groups: int) -> WeightQuantizer:
        return GroupWeightQuantizer(
            bits, out_channels, groups, spec, clip=clip(spec, bits, groups), scale_clip=scale_clip
        )

    return build


def _lsq_clip(spec: QuantSpec, bits: int, groups: int) -> GroupClip:
    return LearnedClip(groups, bits, lsq_init=True)


def _scale_clip_act(spec: QuantSpec, bits: int) -> ActQuantizer:
    return ScaleClipAct(bits, spec.k_a, spec.act_momentum, spec.act_stat)


def _dorefa_weights(spec: QuantSpec, bits: int, out_channels: int, groups: int) -> WeightQuantizer:
    return DorefaWeightQuantizer(bits, grad_outside=spec.weight_grad == "pass")


METHODS: dict[str, Method] = {
    "gdrq": Method(
        _group_quantizer(chosen_clip, scale_clip=True),
        _scale_clip_act,
        scale_clip=True,
        grouped=True,
        edge="groups_only",
    ),
    "scale_clip_only": Method(
        _group_quantizer(ALPHA_CHOICES["scale_clip"], scale_clip=True),
        _scale_clip_act,
        scale_clip=True,
        grouped=False,
        edge="minmax",
    ),
    "groups_only": Method(
        _group_quantizer(chosen_clip, scale_clip=False),
        lambda spec, bits: MinMaxAct(bits, spec.act_momentum),
        scale_clip=False,
        grouped=True,
        running_clip=True,
    ),
    "minmax": Method(
        _group_quantizer(ALPHA_CHOICES["max"], scale_clip=False),
        lambda spec, bits: MinMaxAct(bits, spec.act_momentum),
        scale_clip=False,
        grouped=False,
        running_clip=True,
    ),
    "lsq": Method(
        _group_quantizer(_lsq_clip, scale_clip=False),
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


def _brevitas_model(
    model: nn.Module, spec: QuantSpec, scope: QuantScope, batches: list[Tensor]
) -> nn.Module:
    from gdrq_bench.quant.brevitas import brevitas_model  # the bench extra: loaded when used

    return brevitas_model(model, spec, scope, batches)


def register_method(name: str, method: Method) -> None:
    """Make `method=name` run `method` (a plugin module's, named in `plugins`, or one of
    the registry's own below)."""
    METHODS[name] = method


def own_methods() -> list[str]:
    """The methods made of gdrq_bench's layers, in the registry's order (the others build
    their models through Method.build)."""
    return [name for name, method in METHODS.items() if method.build is None]


register_method(
    "brevitas",
    Method(
        None,
        None,
        scale_clip=False,
        grouped=False,
        build=_brevitas_model,
        folds=False,
        needs=("brevitas",),
        tasks=("classification",),
        knobs=frozenset({"method", "w_bits", "a_bits", "first_last_bits"}),
        weight_groups="per_channel",
    ),
)


def get_method(name: str) -> Method:
    """The method called `name`; the registry, not QuantSpec, knows which names exist."""
    if name not in METHODS:
        raise SpecError("method", name, f" is unknown: use one of {sorted(METHODS)}")
    return METHODS[name]


def method_knobs(name: str, post_training: bool = False) -> frozenset[str]:
    """The QuantSpec knobs a run of method `name` reads: its own layers' and, where the first
    and last layers take another method (edge_method), theirs; under post-training
    quantization, those less the training stages' (TRAINING_ONLY_KNOBS)."""
    knobs = get_method(name).own_knobs | edge_method(name).own_knobs
    return knobs - TRAINING_ONLY_KNOBS if post_training else knobs


def edge_method(name: str) -> Method:
    """The method of the first and last layers when they take their own bit-width."""
    method = get_method(name)
    return get_method(method.edge) if method.edge else method
