"""Segmentation metrics: the confusion matrix, IoU and pixel accuracy against pixel loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdrq_bench.metrics.segmentation import ConfusionMatrix

K = 4
# 255 marks ignored pixels, where any prediction is left uncounted; class 2 is only predicted.
TARGET = torch.tensor(
    [
        [0, 0, 1, 1, 255],
        [0, 1, 1, 255, 255],
        [3, 3, 0, 0, 1],
    ]
)
PREDICTION = torch.tensor(
    [
        [0, 2, 1, 0, 3],
        [0, 1, 1, 2, 0],
        [3, 0, 0, 2, 1],
    ]
)


def loop_scores(targets: list[np.ndarray], predictions: list[np.ndarray], k: int) -> dict:
    """IoU per class and pixel accuracy by visiting every pixel, in percent (NaN: undefined)."""
    tp, fp, fn = [0] * k, [0] * k, [0] * k
    counted = 0
    for target, prediction in zip(targets, predictions):
        for t, p in zip(target.ravel().tolist(), prediction.ravel().tolist()):
            if t == 255:
                continue
            counted += 1
            if t == p:
                tp[t] += 1
            else:
                fn[t] += 1
                fp[p] += 1
    iou = [
        100 * tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else math.nan
        for c in range(k)
    ]
    defined = [v for v in iou if not math.isnan(v)]
    return {
        "miou": sum(defined) / len(defined),
        "pixel_acc": 100 * sum(tp) / counted,
        "iou_per_class": iou,
    }


def assert_scores_match(scores: dict, expected: dict) -> None:
    assert scores["miou"] == pytest.approx(expected["miou"])
    assert scores["pixel_acc"] == pytest.approx(expected["pixel_acc"])
    assert scores["iou_per_class"] == pytest.approx(expected["iou_per_class"], nan_ok=True)


def test_hand_built_scene_against_pixel_loop() -> None:
    # Counted pixels (target != 255): 12. Class 0: truth 5, predicted 5, hits 3 -> IoU 3/7.
    # Class 1: truth 5, predicted 4, hits 4 -> IoU 4/5. Class 2: only predicted (2 pixels) ->
    # IoU 0. Class 3: truth 2, predicted 1 (its third prediction is on an ignored pixel), hits
    # 1 -> IoU 1/2. Pixel accuracy 8/12.
    metric = ConfusionMatrix(K)
    metric.update(TARGET, PREDICTION)
    scores = metric.compute()
    assert scores["iou_per_class"] == pytest.approx([300 / 7, 80.0, 0.0, 50.0])
    assert scores["miou"] == pytest.approx((300 / 7 + 130) / 4)
    assert scores["pixel_acc"] == pytest.approx(200 / 3)
    assert_scores_match(scores, loop_scores([TARGET.numpy()], [PREDICTION.numpy()], K))
    assert metric.matrix[0].tolist() == [3, 0, 2, 0]  # rows are truth, columns predictions
    assert int(metric.matrix.sum()) == 12


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out() -> None:
    metric = ConfusionMatrix(K + 1)  # class 4 appears nowhere
    metric.update(TARGET, PREDICTION)
    scores = metric.compute()
    assert math.isnan(scores["iou_per_class"][4])
    assert scores["miou"] == pytest.approx((300 / 7 + 130) / 4)
    assert_scores_match(scores, loop_scores([TARGET.numpy()], [PREDICTION.numpy()], K + 1))


def test_updates_accumulate_over_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, K, (5, 2, 7, 9), generator=generator)
    targets[torch.rand(targets.shape, generator=generator) < 0.2] = 255
    predictions = torch.randint(0, K, targets.shape, generator=generator)
    metric = ConfusionMatrix(K)
    for target, prediction in zip(targets, predictions):
        metric.update(target, prediction)
    expected = loop_scores(list(targets.numpy()), list(predictions.numpy()), K)
    assert_scores_match(metric.compute(), expected)
    whole = ConfusionMatrix(K)
    whole.update(targets, predictions)
    assert torch.equal(whole.matrix, metric.matrix)


def test_nothing_counted_gives_nan() -> None:
    metric = ConfusionMatrix(K)
    metric.update(torch.full((2, 3), 255), torch.zeros(2, 3, dtype=torch.int64))
    scores = metric.compute()
    assert math.isnan(scores["miou"]) and math.isnan(scores["pixel_acc"])
    assert all(math.isnan(v) for v in scores["iou_per_class"])


def test_bad_inputs() -> None:
    metric = ConfusionMatrix(K)
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"class indices in 0\.\.3"):
        metric.update(torch.zeros(2, 3), torch.full((2, 3), K))
    assert int(metric.matrix.sum()) == 0
