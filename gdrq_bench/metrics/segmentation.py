"""Semantic segmentation metrics: a pixel confusion matrix, mean IoU and pixel accuracy."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Pixel counts by (true class, predicted class), as torchvision's segmentation reference.

    update() takes class indices (not logits) of the same shape; target pixels outside
    0..num_classes-1, the ignore index 255 among them, are not counted. The matrix stays on the CPU.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes is {num_classes}, not a positive number")
        self.num_classes = num_classes
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, target: Tensor, prediction: Tensor) -> None:
        if target.shape != prediction.shape:
            raise ValueError(
                f"target {tuple(target.shape)} and prediction {tuple(prediction.shape)} "
                "differ in shape"
            )
        k = self.num_classes
        target, prediction = target.flatten().long(), prediction.flatten().long()
        counted = (target >= 0) & (target < k)
        target, prediction = target[counted], prediction[counted]
        if prediction.numel() and not 0 <= int(prediction.min()) <= int(prediction.max()) < k:
            raise ValueError(f"predictions must be class indices in 0..{k - 1}")
        counts = torch.bincount(k * target + prediction, minlength=k * k)
        self.matrix += counts.reshape(k, k).cpu()

    def compute(self) -> dict[str, float | list[float]]:
        """miou, pixel_acc and iou_per_class, in percent.

        IoU_c = TP / (TP + FP + FN). A class absent from both truth and prediction has no IoU:
        it is NaN in iou_per_class and left out of miou (torchvision's reference would make the
        whole mean NaN), whereas a class seen in either and never hit scores 0. With no counted
        pixel at all, every value is NaN.
        """
        matrix = self.matrix.double()
        hits = matrix.diag()
        union = matrix.sum(dim=0) + matrix.sum(dim=1) - hits
        iou = hits / union  # 0 / 0 = NaN for a class absent from both
        return {
            "miou": float(iou.nanmean()) * 100.0,
            "pixel_acc": float(hits.sum() / matrix.sum()) * 100.0,
            "iou_per_class": (iou * 100.0).tolist(),
        }
