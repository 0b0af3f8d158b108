"""Extension seams: a module named in `plugins` adds an export format or a data set from
outside the package, and gdrq-run uses it like its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_runner import assert_failed_cleanly, error_lines, gdrq_run_with_modules, read_rows

from gdrq_bench.run.stages import CALIBRATION_BATCHES

NPZ_EXPORT = '''
"""An export format from outside gdrq_bench: the folded model's integer weights as .npz."""

import numpy as np

from gdrq_bench.run.export import ExportFormat, register_export


def write_npz(job):
    weights = {
        name: tensor.numpy()
        for name, tensor in job.folded.state_dict().items()
        if name.endswith("weight_int")
    }
    np.savez(job.run.run_dir / "weights.npz", **weights)
    job.report["npz"] = {"layers": len(weights)}


register_export("npz", ExportFormat(write_npz))
'''


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return gdrq_run_with_modules(tmp_path, {"npz_export.py": NPZ_EXPORT}, *overrides)


@pytest.mark.slow
def test_an_export_format_added_by_a_plugin_is_written_beside_the_own(tmp_path: Path) -> None:
    result = _run(tmp_path, "plugins=[npz_export]", "export=exact+npz")
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    assert float(row["exact_diff"]) == 0.0  # the own format, in the same run
    run_dir = Path(row["run_dir"])
    weights = np.load(run_dir / "weights.npz")
    assert len(weights.files) == 22  # every folded layer: 21 convs (2 shortcuts) and fc
    assert weights["layer2.0.conv1.weight_int"].shape == (32, 16, 3, 3)
    report = json.loads((run_dir / "export.json").read_text())
    assert report["npz"] == {"layers": 22} and report["exact"]["max_abs_diff"] == 0.0


def test_an_unknown_format_or_plugin_is_named_before_training(tmp_path: Path) -> None:
    result = _run(tmp_path, "export=npz")  # the plugin not loaded: npz is not a format
    assert_failed_cleanly(result, tmp_path, "classification", "export")
    (line,) = error_lines(result)
    assert line.endswith("export=npz: unknown; valid: none, exact, qdq, both")
    result = _run(tmp_path, "plugins=[no_such_module]")
    assert_failed_cleanly(result, tmp_path, "classification", "plugins")
    assert "cannot import 'no_such_module'" in error_lines(result)[0]


def _run_plugin(
    tmp_path: Path,
    module: str,
    source: str,
    config: tuple[str, str],
    *overrides: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """A smoke run with the plugin `module` (its source) and its config (`group/name`, YAML)
    in a conf directory on Hydra's search path."""
    path, text = config
    (tmp_path / "conf" / path).parent.mkdir(parents=True)
    (tmp_path / "conf" / path).write_text(text)
    return gdrq_run_with_modules(
        tmp_path,
        {f"{module}.py": source},
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"plugins=[{module}]",
        *overrides,
        env=env,
    )


STRIPES_DATA = '''
"""A data set from outside gdrq_bench: 4 classes of striped 32x32 images, made in memory."""

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from gdrq_bench.data.registry import register_dataset


class Stripes(Dataset):
    classes = ["horizontal", "vertical", "diagonal", "plain"]

    def __init__(self, count, seed, transform):
        rng = np.random.default_rng(seed)
        self.targets = [i % 4 for i in range(count)]
        self.images = [self._draw(label, rng) for label in self.targets]
        self.transform = transform

    @staticmethod
    def _draw(label, rng):
        grid = np.indices((32, 32)).sum(axis=0) if label == 2 else np.indices((32, 32))[label % 2]
        stripes = (grid // 4) % 2 if label < 3 else np.zeros((32, 32))
        noise = rng.normal(0, 0.1, (32, 32))
        pixels = np.clip((stripes + noise) * 255, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels).convert("RGB")

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.targets[index]


def stripes(dataset, cache_dir):
    return lambda train, transform: Stripes(160 if train else 64, int(not train), transform)


register_dataset("classification", "stripes", stripes)
'''

STRIPES_YAML = """
defaults:
  - classification_schema
  - _self_

name: stripes
root: unused
image_size: 32
preset: small
num_workers: 0
"""


@pytest.mark.slow
def test_a_data_set_added_by_a_plugin_trains_and_scores(tmp_path: Path) -> None:
    """One module (the data set, registered) and one YAML (on Hydra's search path), nothing
    in tasks/: gdrq-run trains, quantizes and scores on it, held-out split included."""
    result = _run_plugin(
        tmp_path,
        "stripes_data",
        STRIPES_DATA,
        ("dataset/stripes.yaml", STRIPES_YAML),
        "dataset=stripes",
        "dataset.holdout=16",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    assert row["dataset"] == "stripes" and row["eval_samples"] == "64"
    assert row["val_samples"] == "16"
    assert 0.0 <= float(row["folded"]) <= 100.0 and float(row["fold_err"]) <= 1e-6


DISCS_DATA = '''
"""A segmentation data set from outside gdrq_bench: one disc per 32x32 image, made in memory."""

import torch
from torch.utils.data import Dataset

from gdrq_bench.data.registry import register_dataset


class Discs(Dataset):
    classes = ["background", "disc"]

    def __init__(self, count, seed):
        generator = torch.Generator().manual_seed(seed)
        rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        self.pairs = []
        for _ in range(count):
            centre = torch.randint(8, 24, (2,), generator=generator)
            mask = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < 36).long()
            noise = 0.1 * torch.rand(3, 32, 32, generator=generator)
            self.pairs.append((mask.float().expand(3, -1, -1) * 0.8 + noise, mask))

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.pairs[index]


def discs(dataset, cache_dir):
    def load(training_split, train, bad_samples):
        return Discs(24 if training_split else 8, int(training_split))

    return load


register_dataset("segmentation", "discs", discs)
'''

DISCS_YAML = """
defaults:
  - segmentation_schema
  - _self_

name: discs
root: unused
image_size: 32
num_workers: 0
"""


@pytest.mark.slow
def test_a_segmentation_data_set_added_by_a_plugin_trains_and_scores(tmp_path: Path) -> None:
    """The same seam for segmentation: the task asks the registry, so a module and a YAML
    are all a data set of another task needs too."""
    result = _run_plugin(
        tmp_path,
        "discs_data",
        DISCS_DATA,
        ("dataset/discs.yaml", DISCS_YAML),
        "task=segmentation",
        "dataset=discs",
        "model=mobilenet_v3_large",
        "task.head=lraspp",
        "trainer.batch_size=4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(tmp_path, "segmentation")
    assert row["dataset"] == "discs" and row["eval_samples"] == "8"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["folded"]) >= {"miou", "iou_background", "iou_disc"}
    assert 0.0 <= float(row["folded"]) <= 100.0 and float(row["fold_err"]) <= 1e-6


OUTSIDE_METHOD = '''
"""A method from outside gdrq_bench through the method hook: its "library" quantizes every
conv's and linear's input to 16 levels with torch's own fake quantization, keeps BN apart."""

import copy
import json
import os

import torch
from torch import nn

from gdrq_bench.quant.methods import Method, register_method


class Levels(nn.Module):
    def __init__(self, layer, scale):
        super().__init__()
        self.layer, self.scale = layer, scale

    def forward(self, x):
        return self.layer(torch.fake_quantize_per_tensor_affine(x, self.scale, 8, 0, 15))


def build(model, spec, scope, batches):
    with open(os.environ["OUTSIDE_LOG"], "w") as log:
        json.dump({"batches": len(batches), "bits": [spec.w_bits, spec.a_bits]}, log)
    scale = float(torch.cat([b.flatten() for b in batches]).abs().max()) / 8
    qmodel = copy.deepcopy(model)
    for name, module in list(qmodel.named_modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            qmodel.set_submodule(name, Levels(module, scale))
    return qmodel


register_method(
    "levels",
    Method(
        None,
        None,
        scale_clip=False,
        grouped=False,
        build=build,
        folds=False,
        knobs=frozenset({"method", "w_bits", "a_bits"}),
        weight_groups="per_channel",
    ),
)
'''


def _run_outside_method(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return _run_plugin(
        tmp_path,
        "outside_method",
        OUTSIDE_METHOD,
        ("method/levels.yaml", "name: levels\n"),
        "method=levels",
        *overrides,
        env={"OUTSIDE_LOG": str(tmp_path / "outside.json")},
    )


@pytest.mark.slow
def test_a_method_from_another_library_runs_through_the_same_stages(tmp_path: Path) -> None:
    """The hook builds the quantized model from 8 calibration batches; the stages train,
    probe and score it; without a fold the row's drop is of the quantized model and its
    folded and fold_err are empty, and only the knobs it reads are filled."""
    result = _run_outside_method(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    calibration = {"batches": CALIBRATION_BATCHES, "bits": [4, 4]}
    assert json.loads((tmp_path / "outside.json").read_text()) == calibration
    (row,) = read_rows(tmp_path)
    assert row["method"] == "levels" and row["groups"] == "per_channel"
    assert row["folded"] == row["fold_err"] == row["k_w"] == row["alpha_mode"] == ""
    assert float(row["drop"]) == pytest.approx(float(row["fp"]) - float(row["quant"]), abs=1e-3)
    drop_ft = float(row["fp_ft"]) - float(row["quant"])
    assert float(row["drop_ft"]) == pytest.approx(drop_ft, abs=1e-3)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"fp", "fp_ft", "round", "quant"} <= set(metrics) and "folded" not in metrics
    assert (tmp_path / "run" / "predictions.json").is_file()


def test_a_method_that_keeps_bn_apart_cannot_be_exported(tmp_path: Path) -> None:
    result = _run_outside_method(tmp_path, "export=exact")
    assert_failed_cleanly(result, tmp_path, "classification", "method=levels keeps BatchNorm")
