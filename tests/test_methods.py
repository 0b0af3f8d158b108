"""GDRQ, its ablations and the baselines (docs/method.md section 7): each trains as specified."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from knob_values import OTHER_KNOB_VALUES
from quant_reference import positive_levels, reference_quantize
from torch import nn
from torch.nn import functional as F

from gdrq_bench.quant import (
    CLIP,
    METHODS,
    QUANT,
    QuantSpec,
    SpecError,
    commit_scale_clip,
    get_method,
    method_knobs,
    quantize_model,
    quantized_layers,
    set_mode,
)
from gdrq_bench.quant.act_quant import LearnedAct
from gdrq_bench.quant.group_clips import LearnedClip
from gdrq_bench.quant.methods import own_methods
from gdrq_bench.quant.scale_clip import WeightScaleClip
from gdrq_bench.quant.weight_quant import GroupWeightQuantizer

GROUPED = {"gdrq", "groups_only"}
SCALE_CLIP = {"gdrq", "scale_clip_only"}
WEIGHT_ALPHA = {
    "gdrq": "learned",
    "scale_clip_only": "scale_clip",
    "groups_only": "learned",
    "minmax": "max",
    "lsq": "learned",
}


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """64 noisy 8x8 images; class 1 has a brighter first channel."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = torch.randn(64, 3, 8, 8, generator=generator)
    images[:, 0] += 1.5 * (2 * labels.float() - 1).view(-1, 1, 1)
    return images, labels


def _spec(method: str, **overrides) -> QuantSpec:
    """W4A4 on every layer (the first and last too), two groups where the method has groups."""
    fields = {"w_bits": 4, "a_bits": 4, "groups": 2, "first_last_bits": "same", **overrides}
    return QuantSpec(method=method, **fields)


def test_the_registry():
    assert set(METHODS) == {
        "gdrq",
        "scale_clip_only",
        "groups_only",
        "minmax",
        "lsq",
        "pact",
        "dorefa",
        "brevitas",
    }
    assert own_methods() == [name for name in METHODS if name != "brevitas"]


@pytest.mark.parametrize("method", sorted(own_methods()))
def test_method_trains_with_a_falling_loss(method):
    model = quantize_model(_tiny_model(), _spec(method)).train()
    images, labels = _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        assert all(layer.weight.grad.abs().sum() > 0 for _, layer in quantized_layers(model))
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("method", sorted(own_methods()))
def test_groups_scale_clip_and_clip_rule_per_method(method):
    for _, layer in quantized_layers(quantize_model(_tiny_model(), _spec(method))):
        quantizer = layer.weight_quantizer
        if isinstance(quantizer, GroupWeightQuantizer):
            assert quantizer.groups == (2 if method in GROUPED else 1)
            assert _scale_clip_k(quantizer) == (3.0 if method in SCALE_CLIP else None)
            assert quantizer.clip.name == WEIGHT_ALPHA[method]
        else:
            assert method in {"pact", "dorefa"}


def _scale_clip_k(quantizer: GroupWeightQuantizer) -> float | None:
    return None if quantizer.scale_clip is None else quantizer.scale_clip.k


def _learned_alphas(model: nn.Module) -> list[torch.nn.Parameter]:
    alphas = []
    for module in model.modules():
        if isinstance(module, LearnedClip):
            alphas.append(module.learned_alpha)
        if isinstance(module, LearnedAct):
            alphas.append(module.clip)
    return alphas


@pytest.mark.parametrize(("method", "count"), [("lsq", 6), ("gdrq", 3)])
def test_learned_clips_receive_gradients(method, count):
    model = quantize_model(_tiny_model(), _spec(method, alpha="learned")).train()
    images, labels = _data()
    F.cross_entropy(model(images), labels).backward()
    alphas = _learned_alphas(model)
    assert len(alphas) == count  # lsq: 3 weight and 3 input clips; gdrq: 3 weight clips
    for alpha in alphas:
        assert alpha.grad is not None
        assert (alpha.grad != 0).all()


def _single_layer(method: str, bits: int = 3) -> nn.Module:
    linear = nn.Linear(20, 6)
    torch.nn.init.normal_(linear.weight, 0.0, 0.7, generator=torch.Generator().manual_seed(1))
    return quantize_model(nn.Sequential(linear), _spec(method, w_bits=bits, a_bits=bits))[0]


def test_minmax_clips_weights_at_max_abs():
    layer = _single_layer("minmax")
    weight = layer.weight.detach().numpy()
    expected = reference_quantize(weight, 3, np.abs(weight).max())
    np.testing.assert_allclose(layer.weight_quantizer(layer.weight).detach(), expected, atol=1e-6)


def test_dorefa_weights_are_normalised_tanh_on_the_unit_grid():
    layer = _single_layer("dorefa")
    squashed = np.tanh(layer.weight.detach().numpy().astype(np.float64))
    expected = reference_quantize(squashed / np.abs(squashed).max(), 3, 1.0)
    np.testing.assert_allclose(layer.weight_quantizer(layer.weight).detach(), expected, atol=1e-6)


def test_dorefa_activations_clip_to_unit_range():
    layer = _single_layer("dorefa")
    x = torch.linspace(0.0, 3.0, 200)
    out = layer.input_quantizer(x)
    np.testing.assert_allclose(out, reference_quantize(x.numpy(), 3, 1.0, signed=False), atol=1e-6)


@pytest.mark.parametrize("method", ["lsq", "pact"])
def test_learned_activation_clip_initialisation(method):
    layer = _single_layer(method).train()
    x = torch.rand(4, 20, generator=torch.Generator().manual_seed(2)) * 3
    layer.input_quantizer(x)
    n = positive_levels(3, signed=False)
    expected = 2 * x.mean() * n**0.5 if method == "lsq" else x.max()
    assert layer.input_quantizer.clip.item() == pytest.approx(expected.item(), rel=1e-6)


def test_lsq_weight_clip_initialisation():
    layer = _single_layer("lsq").train()
    layer.weight_quantizer(layer.weight)
    expected = 2 * layer.weight.abs().mean().item() * positive_levels(3, signed=True) ** 0.5
    assert layer.weight_quantizer.clip.learned_alpha.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("statistic", ["mean_abs", "max_abs"])
def test_running_clip_statistic_is_the_mean_or_max_of_the_magnitudes(statistic: str) -> None:
    """An unsigned quantizer skips |x| on non-negative input; the statistic must not change,
    also for a later batch that has negatives after all."""
    from gdrq_bench.quant.act_quant import MinMaxAct, ScaleClipAct

    torch.manual_seed(0)
    quantizer = (
        ScaleClipAct(4, k_a=1.0, momentum=1.0, stat="mean_abs")
        if statistic == "mean_abs"
        else MinMaxAct(4, momentum=1.0)
    ).train()
    reduce = torch.mean if statistic == "mean_abs" else torch.amax
    for batch in (torch.relu(torch.randn(4, 8, 5, 5)), torch.randn(4, 8, 5, 5)):
        quantizer(batch)
        assert not quantizer.signed  # decided by the first, non-negative, batch
        assert torch.equal(quantizer.running_stat, reduce(batch.abs()))


@pytest.mark.parametrize(
    ("method", "edge_alpha"), [("gdrq", "learned"), ("scale_clip_only", "max")]
)
def test_edge_layers_at_their_own_bits_are_not_scale_clipped(method, edge_alpha):
    """Scale-Clip reshapes the low-bit layers; the 8-bit first and last layers take the
    method without it (groups_only for gdrq, minmax for scale_clip_only)."""
    from gdrq_bench.quant.act_quant import MinMaxAct, ScaleClipAct

    layers = [
        layer
        for _, layer in quantized_layers(
            quantize_model(_tiny_model(), _spec(method, first_last_bits=8))
        )
    ]
    first, middle, last = layers
    for edge in (first, last):
        assert edge.weight_quantizer.bits == 8 and edge.weight_quantizer.scale_clip is None
        assert edge.weight_quantizer.clip.name == edge_alpha
        assert isinstance(edge.input_quantizer, MinMaxAct)
    assert _scale_clip_k(middle.weight_quantizer) == 3.0
    assert isinstance(middle.input_quantizer, ScaleClipAct)
    same = quantized_layers(quantize_model(_tiny_model(), _spec(method)))
    assert all(_scale_clip_k(layer.weight_quantizer) == 3.0 for _, layer in same)


@pytest.mark.parametrize(
    ("bits", "scale_clip_8bit", "reshaped"),
    [((8, 8), True, True), ((8, 8), False, False), ((4, 8), False, True)],
)
def test_8bit_layers_take_the_edge_quantizers_without_scale_clip_8bit(
    bits, scale_clip_8bit, reshaped
):
    """method.scale_clip_8bit=false: a layer whose weights and activations are both at 8 bits
    is quantized as the 8-bit first and last layers are (gdrq: groups_only's quantizers, no
    Scale-Clip); a layer with 4-bit weights keeps Scale-Clip."""
    from gdrq_bench.quant.act_quant import MinMaxAct, ScaleClipAct

    spec = _spec("gdrq", w_bits=bits[0], a_bits=bits[1], scale_clip_8bit=scale_clip_8bit)
    _, middle, _ = (layer for _, layer in quantized_layers(quantize_model(_tiny_model(), spec)))
    assert (middle.weight_quantizer.scale_clip is not None) == reshaped
    assert isinstance(middle.input_quantizer, ScaleClipAct if reshaped else MinMaxAct)
    assert middle.weight_quantizer.clip.name == spec.alpha  # the groups and their clips stay


def _batch_stat_before_issue_19(self, x: torch.Tensor) -> torch.Tensor:
    """RunningStatClip's batch statistic as it was: max |x| from a min pass and a max pass."""
    x = x.detach()
    if not self.signed and bool(x.min() >= 0):
        return x.mean() if self.statistic == "mean_abs" else x.max()
    magnitude = x.abs()
    return magnitude.mean() if self.statistic == "mean_abs" else magnitude.max()


def _quantizer_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "quantizer" in k}


@pytest.mark.parametrize("clip_style", ["project", "clamp"])
@pytest.mark.parametrize("method", sorted(own_methods()))
def test_training_steps_match_the_unshortened_graph_bit_for_bit(monkeypatch, method, clip_style):
    """Issue 19's savings change no value and no gradient: a `project` quantizer skips the
    re-clamp of a weight start_step has just clipped (identity on such a weight), and the
    max-|x| activation statistic comes from one aminmax pass. Against a copy that takes the
    old paths, three SGD steps of every method give the same outputs, gradients (learned
    clips included), weights and quantizer buffers, bit for bit, in both clip styles, on data
    whose largest input sits exactly on the first min-max clip."""
    from gdrq_bench.quant.act_quant import RunningStatClip

    images, labels = _data()
    images[0, 0, 0, 0] = images.abs().max()  # on the first max |x| clip exactly
    spec = _spec(method, clip_style=clip_style, alpha_every=2, act_stat="max_abs")
    models = [quantize_model(_tiny_model(), spec).train() for _ in range(2)]
    shortcuts = []
    for module in models[0].modules():
        if isinstance(module, WeightScaleClip):
            still = module._still_projected
            module._still_projected = lambda weight, still=still: (
                shortcuts.append(still(weight)) or shortcuts[-1]
            )
    for module in models[1].modules():
        if isinstance(module, WeightScaleClip):
            module._still_projected = lambda weight: False
        if isinstance(module, RunningStatClip):
            module._batch_stat = _batch_stat_before_issue_19.__get__(module)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for m in models]
    for step in range(3):
        batch = slice(16 * step, 16 * step + 24)
        outputs, grads = [], []
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            output = model(images[batch])
            F.cross_entropy(output, labels[batch]).backward()
            outputs.append(output)
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
            optimizer.step()
        assert torch.equal(outputs[0], outputs[1]), step
        assert len(grads[0]) == len(grads[1])
        for new, old in zip(*grads):
            assert torch.equal(new, old), step
        for (name, new), old in zip(
            _quantizer_state(models[0]).items(), _quantizer_state(models[1]).values()
        ):
            assert torch.equal(new, old), (step, name)
    for new, old in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(new, old)
    project = get_method(method).scale_clip and clip_style == "project"
    assert any(shortcuts) == project  # the shortcut was taken where it applies


def _trained_output(spec: QuantSpec) -> torch.Tensor:
    """The eval output of a three-conv model after 3 reshape steps (Scale-Clip methods) and
    12 QAT steps of `spec`, from fixed weights and data."""
    torch.manual_seed(0)
    model = nn.Sequential(
        *(
            module
            for width in (3, 16, 16)
            for module in (nn.Conv2d(width, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        ),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    torch.manual_seed(1)
    x, y = torch.randn(16, 3, 8, 8) * 2, torch.randint(0, 10, (16,))
    qmodel = quantize_model(model, spec)
    optimizer = torch.optim.SGD(qmodel.parameters(), lr=0.1)
    phases = [(CLIP, 3)] if get_method(spec.method).scale_clip else []
    for mode, steps in [*phases, (QUANT, 12)]:
        if mode == QUANT and phases and not spec.scale_clip_qat:
            commit_scale_clip(qmodel)
        set_mode(qmodel, mode).train()
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(qmodel(x), y).backward()
            optimizer.step()
    with torch.no_grad():
        return qmodel.eval()(x)


@pytest.mark.parametrize("method", own_methods())
def test_a_knob_a_method_does_not_read_changes_none_of_its_numbers(method: str) -> None:
    """method_knobs (the row's filled spec columns, the spec hash) holds every knob that moves
    a method's numbers: changing any other leaves its trained model's outputs bit for bit."""
    assert set(OTHER_KNOB_VALUES) | {"method", "w_bits", "a_bits"} == set(
        QuantSpec.__dataclass_fields__
    )
    base = QuantSpec(method=method)
    expected = _trained_output(base)
    unread = sorted(set(OTHER_KNOB_VALUES) - method_knobs(method))
    moved = [
        knob
        for knob in unread
        if not torch.equal(
            _trained_output(replace(base, **{knob: OTHER_KNOB_VALUES[knob]})), expected
        )
    ]
    assert moved == []
    # the harness sees a read knob move the numbers
    assert not torch.equal(_trained_output(replace(base, first_last_bits="same")), expected)


def test_every_valid_alpha_choice_builds_the_clip_policy_of_its_name():
    """spec.alpha's choices and the policies a spec can name are one list (max|W_g| with
    them: per-channel min-max under grouping=per_channel)."""
    from gdrq_bench.quant.choices import ALPHA_MODES
    from gdrq_bench.quant.group_clips import ALPHA_CHOICES, chosen_clip

    assert tuple(ALPHA_CHOICES) == ALPHA_MODES
    for alpha in ALPHA_MODES:
        assert chosen_clip(QuantSpec(alpha=alpha), 4, 2).name == alpha
    with pytest.raises(SpecError, match="alpha='min'"):
        QuantSpec(alpha="min")
