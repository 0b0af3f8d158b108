"""Post-training quantization (trainer.schedule=ptq): the activation ranges against numpy,
AdaRound's rounding against nearest rounding's reconstruction error, bias correction's shift
against its formula, and gdrq-run's calibrate stage end to end on every task."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import assert_failed_cleanly, gdrq_run, read_rows
from hydra import compose, initialize_config_dir
from knob_values import OTHER_KNOB_VALUES
from quant_reference import reference_mse_clip
from torch import nn

from gdrq_bench.config import CONFIG_DIR
from gdrq_bench.config.errors import ConfigError
from gdrq_bench.config.schema import register_configs
from gdrq_bench.quant import QuantSpec, quantize_model, quantized_layers
from gdrq_bench.quant.act_ranges import ActivationSample, mse_clip, percentile_clip
from gdrq_bench.quant.adaround import AdaRoundSettings, learned_levels
from gdrq_bench.quant.ptq import calibrate_activations, correct_biases, reestimate_batch_norms
from gdrq_bench.run.calibrate import check_schedule
from gdrq_bench.run.spec import build_spec

PTQ = ("trainer.schedule=ptq", "logger=none")
register_configs()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("percentile", [50.0, 99.0, 99.99, 100.0])
def test_percentile_clip_is_numpys_percentile(percentile: float) -> None:
    values = np.random.default_rng(0).standard_normal(10_001) ** 2
    clip = percentile_clip(torch.from_numpy(values), percentile)
    assert clip == pytest.approx(np.percentile(values, percentile), rel=1e-12)


@pytest.mark.parametrize(("bits", "unsigned"), [(4, True), (4, False), (2, True), (8, False)])
def test_mse_clip_is_the_numpy_grid_search_optimum(bits: int, unsigned: bool) -> None:
    values = np.abs(np.random.default_rng(bits).standard_t(3, 20_000))
    clip = mse_clip(torch.from_numpy(values), bits, unsigned, points=64)
    assert clip == pytest.approx(reference_mse_clip(values, bits, unsigned, 64), rel=1e-5)
    assert clip < values.max()  # heavy tails: the optimum clips some values


def test_activation_sample_keeps_the_exact_max_and_sign_of_every_value() -> None:
    """A batch larger than the per-batch share is sampled, but its max and sign are exact."""
    sample = ActivationSample(per_batch=100, generator=torch.Generator().manual_seed(0))
    sample.add(torch.linspace(0, 1, 1000))  # sampled: 100 values
    sample.add(torch.tensor([-3.0, 2.0]))
    assert sample.maximum == 3.0 and sample.negative
    assert sum(values.numel() for values in sample.values) == 102
    assert sample.clip("max", 4, 99.0, 64) == 3.0


def test_adaround_reconstructs_a_layer_better_than_nearest_rounding() -> None:
    """A 3-bit linear layer fed coarsely rounded inputs, its target the float layer on the
    float inputs (as a layer deep in a quantized network is): every learned level is w/d
    rounded down or up, and the squared output error, computed here in numpy, falls below
    the error of rounding each weight to the nearest level."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 16, generator=generator)
    inputs = torch.randn(256, 16, generator=generator) + 0.5
    rounded_inputs = torch.round(inputs * 1.5) / 1.5
    step = weight.abs().amax(dim=1, keepdim=True) / 3
    levels = learned_levels(
        weight,
        step,
        (-3, 3),
        lambda x, w: x @ w.T,
        [rounded_inputs],
        [inputs @ weight.T],
        AdaRoundSettings(iterations=1000, samples=64),
        generator,
    )
    scaled = (weight / step).numpy()
    learned = levels.numpy()
    assert np.all((learned == np.floor(scaled)) | (learned == np.floor(scaled) + 1))
    assert learned.min() >= -3 and learned.max() <= 3

    def error(ints: np.ndarray) -> float:
        quantized = ints * step.numpy().astype(np.float64)
        fed = rounded_inputs.numpy().astype(np.float64)
        target = inputs.numpy().astype(np.float64) @ weight.numpy().astype(np.float64).T
        return float(np.sum((fed @ quantized.T - target) ** 2))

    nearest = np.clip(np.round(scaled), -3, 3)
    assert error(learned) < 0.95 * error(nearest)


def _calibrated_output(spec: QuantSpec) -> torch.Tensor:
    """The output of `spec`'s model of a fixed three-conv network after the calibrate stage's
    steps (Scale-Clip written into the weights, MSE activation ranges on two batches)."""
    from gdrq_bench.quant import QUANT, commit_scale_clip, set_mode

    torch.manual_seed(0)
    model = nn.Sequential(
        *(
            m
            for w in (3, 8, 8)
            for m in (nn.Conv2d(w, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        ),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    ).eval()
    batches = [torch.randn(4, 3, 6, 6) for _ in range(2)]
    qmodel = set_mode(quantize_model(model, spec), QUANT).eval()
    commit_scale_clip(qmodel)
    calibrate_activations(qmodel, batches, "mse", 99.99, 16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        return qmodel(batches[0])


def test_post_training_runs_read_no_training_knob() -> None:
    """The knobs method_knobs leaves out under PTQ (TRAINING_ONLY_KNOBS: the row's columns and
    the spec hash) change no number of a calibrated model; a knob it keeps does."""
    from dataclasses import replace

    from gdrq_bench.quant.methods import TRAINING_ONLY_KNOBS, method_knobs

    # k_a=3: a multiplier whose clip round trip (alpha / k_a * k_a) is not trivially exact
    other = {**{knob: OTHER_KNOB_VALUES[knob] for knob in TRAINING_ONLY_KNOBS}, "k_a": 3.0}
    base = QuantSpec(method="gdrq", w_bits=4, a_bits=4, groups=2, first_last_bits="same")
    assert not TRAINING_ONLY_KNOBS & method_knobs("gdrq", post_training=True)
    expected = _calibrated_output(base)
    for knob, value in other.items():
        assert torch.equal(_calibrated_output(replace(base, **{knob: value})), expected), knob
    assert not torch.equal(_calibrated_output(replace(base, k_w=1.5)), expected)


def test_bias_correction_shifts_each_bias_by_the_formula() -> None:
    """A 4-bit quantized linear layer, calibrated and corrected on X: its new bias is
    b - (W_q mean(Q(X)) - W mean(X)), computed here from the layer's own weights, and its
    output's mean error over X is then 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 5)).eval()
    inputs = torch.randn(300, 12) * 2 + 1
    spec = QuantSpec(method="minmax", first_last_bits="same")
    qmodel = quantize_model(model, spec).eval()
    calibrate_activations(qmodel, [inputs], "max", 99.0, 64, torch.Generator())
    ((_, layer),) = quantized_layers(qmodel)
    with torch.no_grad():
        quantized_weight = layer.weight_quantizer(layer.weight).double()
        quantized_inputs = layer.input_quantizer(inputs).double()
    weight, bias = model[0].weight.detach().double(), model[0].bias.detach().double()
    shift = quantized_weight @ quantized_inputs.mean(0) - weight @ inputs.double().mean(0)
    correct_biases(qmodel, model, [inputs])
    assert torch.allclose(layer.bias.detach().double(), bias - shift, atol=1e-5)
    with torch.no_grad():
        error = (qmodel(inputs) - model(inputs)).double().mean(0)
    assert error.abs().max() < 1e-5


def test_bn_reestimation_takes_the_quantized_models_batch_statistics() -> None:
    """conv -> BN -> ReLU -> conv, 4-bit: after re-estimation on two batches the BN's
    running mean and variance are the average over the batches of the per-channel mean and
    unbiased variance (over a batch's images and positions) of what the quantized model feeds
    it, computed here from its captured inputs; its momentum is kept and the model is left in
    eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3))
    model.eval()
    batches = [torch.randn(5, 3, 9, 9) * 3 + 1 for _ in range(2)]
    qmodel = quantize_model(
        model, QuantSpec(method="minmax", w_bits=4, a_bits=4, first_last_bits="same")
    )
    calibrate_activations(qmodel.eval(), batches, "max", 99.0, 64, torch.Generator())
    norms = [module for module in qmodel.modules() if isinstance(module, nn.BatchNorm2d)]
    seen: dict[int, list[torch.Tensor]] = {id(norm): [] for norm in norms}
    handles = [
        norm.register_forward_pre_hook(lambda m, inputs: seen[id(m)].append(inputs[0].clone()))
        for norm in norms
    ]
    with torch.no_grad():
        for batch in batches:
            qmodel(batch)
    for handle in handles:
        handle.remove()
    assert reestimate_batch_norms(qmodel, batches) == 1
    for norm in norms:
        per_batch = [x.double().transpose(0, 1).flatten(1) for x in seen[id(norm)]]
        mean = torch.stack([values.mean(1) for values in per_batch]).mean(0)
        variance = torch.stack([values.var(1) for values in per_batch]).mean(0)
        assert torch.allclose(norm.running_mean.double(), mean, atol=1e-5)
        assert torch.allclose(norm.running_var.double(), variance, rtol=1e-4)
        assert norm.momentum == 0.1 and not norm.training


@pytest.mark.slow
def test_ptq_run_calibrates_folds_and_exports_exactly(tmp_path: Path, cache_dir: Path) -> None:
    """Every calibration step at once (MSE ranges, AdaRound, BN re-estimation, bias
    correction) on the digits:
    the row says ptq with no fine-tuning and the calibration images, the fold holds and the
    exact ONNX graph equals the folded model; trainer.eval_quant=false scores the folded
    model alone (`quant` empty)."""
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *PTQ,
        "trainer.calibrate.batches=2",
        "trainer.calibrate.act_range=mse",
        "trainer.calibrate.rounding=adaround",
        "trainer.calibrate.adaround_iterations=5",
        "trainer.calibrate.bn_reestimate=true",
        "trainer.calibrate.bias_correction=true",
        "trainer.eval_quant=false",
        "export=exact",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = read_rows(tmp_path)
    assert row["quant"] == "" and float(row["folded"]) > 0
    assert (row["schedule"], row["finetune_epochs"], row["calib_samples"]) == ("ptq", "0", "32")
    assert (row["act_range"], row["rounding"], row["bn_reestimate"], row["bias_correction"]) == (
        "mse",
        "adaround 5",
        "true",
        "true",
    )
    assert row["fp_ft"] == "" and row["failed"] == ""
    assert float(row["fold_err"]) <= 1e-6
    assert float(row["exact_diff"]) == 0.0
    assert "adaround 1/" in (tmp_path / "run" / "gdrq_run.log").read_text()


@pytest.mark.slow
def test_a_bad_schedule_fails_with_one_line_and_no_row(tmp_path: Path, cache_dir: Path) -> None:
    result = gdrq_run(tmp_path, cache_dir, "logger=none", "trainer.schedule=ptqq")
    assert_failed_cleanly(result, tmp_path, "classification", "trainer.schedule='ptqq'")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (("trainer.calibrate.act_range=median",), "trainer.calibrate.act_range='median'"),
        (("trainer.calibrate.percentile=0",), "trainer.calibrate.percentile=0"),
        (("trainer.calibrate.batches=0",), "trainer.calibrate.batches=0"),
        (("method=dorefa", "trainer.calibrate.rounding=adaround"), "method=dorefa"),
        (("method=brevitas", "trainer.calibrate.bias_correction=true"), "method=brevitas"),
        (("method=brevitas", "trainer.calibrate.act_range=max"), "act_range=mse"),
        (("method=brevitas", "trainer.calibrate.bn_reestimate=true"), "bn_reestimate=false"),
    ],
)
def test_bad_calibration_settings_are_named_before_anything_runs(
    overrides: tuple[str, ...], named: str
) -> None:
    """check_schedule, which prepare_run calls before training (the test above sees its
    error reach the command line as one line)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["trainer.schedule=ptq", *overrides])
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_schedule(cfg, build_spec(cfg))


@pytest.mark.parametrize("method", ["gdrq", "brevitas"])
def test_the_default_calibration_is_the_mse_range_and_any_method_takes_it(method: str) -> None:
    """The default act_range is mse (the range the bench chose); a method another library
    calibrates (brevitas) takes the defaults without an error."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["trainer.schedule=ptq", f"method={method}"])
    assert cfg.trainer.calibrate.act_range == "mse"
    check_schedule(cfg, build_spec(cfg))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "overrides"),
    [
        (  # the cheapest detector: calibration is the task's, not the detector's
            "detection",
            (
                "dataset.image_size=64",
                "trainer.batch_size=2",
                "task.detector=ssdlite",
                "model=mobilenet_v3_large",
            ),
        ),
        ("segmentation", ("model=mobilenet_v3_large", "task.head=lraspp")),
    ],
)
def test_detection_and_segmentation_ptq_runs_write_rows(
    tmp_path: Path, cache_dir: Path, task: str, overrides: tuple[str, ...]
) -> None:
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *PTQ,
        f"task={task}",
        *overrides,
        "trainer.eval_batch_size=8",
        "trainer.calibrate.batches=2",
        "trainer.calibrate.bias_correction=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = read_rows(tmp_path, task)
    assert (row["schedule"], row["finetune_epochs"]) == ("ptq", "0")
    assert int(row["calib_samples"]) > 0
    assert float(row["fold_err"]) <= 1e-6
