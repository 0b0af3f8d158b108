"""Fashion-MNIST from its IDX files (a tiny set written by the test) and the 32x32 MobileNetV2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import assert_failed_cleanly, gdrq_run, read_rows
from fashion_files import write_idx_set
from hydra import compose, initialize_config_dir
from torch import nn

from gdrq_bench.config import CONFIG_DIR
from gdrq_bench.config.errors import DataError
from gdrq_bench.data.classification_transforms import build_transforms
from gdrq_bench.data.fashion_mnist import INSTALL, load_fashion_mnist, prepare_fashion_mnist
from gdrq_bench.models.classifiers import build_classifier
from gdrq_bench.quant import QuantSpec, fold_model, quantize_model, verify_fold


def test_idx_files_load_through_torchvision_once(tmp_path: Path) -> None:
    root = write_idx_set(tmp_path / "idx", train=30, test=12)
    cache = tmp_path / "cache"
    train = load_fashion_mnist(root, cache, train=True, transform=None)
    test = load_fashion_mnist(root, cache, train=False, transform=None)
    assert (len(train), len(test)) == (30, 12)
    image, label = test[7]
    assert image.size == (28, 28) and image.mode == "L" and label == 7
    assert list(train.classes)[:2] == ["T-shirt/top", "Trouser"]
    unpacked = prepare_fashion_mnist(root, cache)
    assert sorted(p.name for p in (unpacked / "FashionMNIST" / "raw").iterdir()) == sorted(
        [
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
        ]
    )
    # the same files give the same unpacked folder; other files another one
    assert prepare_fashion_mnist(root, cache) == unpacked
    other = write_idx_set(tmp_path / "other", train=30, test=12, seed=1)
    assert prepare_fashion_mnist(other, cache) != unpacked


def test_missing_files_name_the_root_and_the_apt_package(tmp_path: Path) -> None:
    root = write_idx_set(tmp_path / "idx")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as error:
        prepare_fashion_mnist(root, tmp_path / "cache")
    assert INSTALL in str(error.value) and str(root) in str(error.value)


def test_a_corrupt_idx_file_is_named(tmp_path: Path) -> None:
    root = write_idx_set(tmp_path / "idx")
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(root, tmp_path / "cache", train=True, transform=None)


def test_images_are_padded_to_32_on_three_channels(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["dataset=fashion_mnist"])
    train_transform, eval_transform = build_transforms(cfg.dataset)
    root = write_idx_set(tmp_path / "idx")
    image, _ = load_fashion_mnist(root, tmp_path / "cache", False, eval_transform)[3]
    assert image.shape == (3, 32, 32)
    raw = np.asarray(load_fashion_mnist(root, tmp_path / "cache", False, None)[3][0])
    mean, std = cfg.dataset.mean[0], cfg.dataset.std[0]
    expected = (raw / 255.0 - mean) / std
    np.testing.assert_allclose(image[0, 2:30, 2:30].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(image[:, :2].numpy(), -mean / std, rtol=1e-5)  # zero padding
    assert torch.equal(image[0], image[2])
    assert train_transform(load_fashion_mnist(root, tmp_path / "c", True, None)[0][0]).shape == (
        3,
        32,
        32,
    )


def test_mobilenet_v2_cifar_quantizes_and_folds_exactly() -> None:
    torch.manual_seed(0)
    model = build_classifier("mobilenet_v2_cifar", 10, pretrained=False)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.weight.shape[1] == 1 for m in depthwise)
    qmodel = quantize_model(model, QuantSpec(w_bits=4, a_bits=4)).train()
    for _ in range(2):
        qmodel(torch.randn(8, 3, 32, 32))  # statistics and clips observe training batches
    qmodel.eval()
    check = verify_fold(qmodel, fold_model(qmodel), [torch.randn(4, 3, 32, 32)])
    assert check["max_rel"] <= 1e-6


@pytest.mark.slow
def test_gdrq_run_on_fashion_mnist_with_the_depthwise_network(tmp_path: Path) -> None:
    root = write_idx_set(tmp_path / "idx", train=64, test=32)
    overrides = ["dataset=fashion_mnist", f"dataset.root={root}", "model=mobilenet_v2_cifar"]
    result = gdrq_run(tmp_path, tmp_path / "cache", *overrides, "logger=none")
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    assert (row["dataset"], row["model"], row["metric"]) == (
        "fashion_mnist",
        "mobilenet_v2_cifar",
        "top1",
    )
    assert float(row["fold_err"]) <= 1e-6 and float(row["nll"]) > 0


def test_gdrq_run_without_the_files_says_how_to_install_them(tmp_path: Path) -> None:
    missing = tmp_path / "no-fashion"
    result = gdrq_run(
        tmp_path, tmp_path / "cache", "dataset=fashion_mnist", f"dataset.root={missing}"
    )
    assert_failed_cleanly(result, tmp_path, "classification", INSTALL)
