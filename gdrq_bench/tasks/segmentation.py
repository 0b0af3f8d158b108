"""Semantic segmentation on the data sets of data/registry.py (VOC class masks, the embedded
shapes scenes in the same layout, any a plugin registers), scored by mIoU over a confusion
matrix with the ignore label left out, as torchvision's references score it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from gdrq_bench.config.schema import (
    SegmentationDatasetConfig,
)
from gdrq_bench.data.holdout import split_holdout
from gdrq_bench.data.registry import dataset_loader
from gdrq_bench.data.segmentation import collate_segmentation
from gdrq_bench.data.voc import IGNORE_INDEX
from gdrq_bench.metrics.segmentation import ConfusionMatrix
from gdrq_bench.models.segmenters import build_segmenter, check_segmenter, segmenter_scope
from gdrq_bench.tasks.base import Task
from gdrq_bench.tasks.common import eval_batches, pair_to_device

AUX_WEIGHT = 0.5  # torchvision's reference weighs the auxiliary loss so


class SegmentationTask(Task):
    name = "segmentation"
    dataset_schema = SegmentationDatasetConfig
    collate = staticmethod(collate_segmentation)
    metric = "miou"

    def setup(self, cache_dir: str) -> None:
        task, dataset, model = self.task_config, self.dataset_config, self.model_config
        check_segmenter(task.head, model.name, task.aux_loss)
        load = dataset_loader("segmentation", dataset, cache_dir)  # the data set's source
        self.train_set = load(True, True, self.bad_samples)
        self.eval_set = load(False, False, self.bad_samples)
        self.classes = list(self.eval_set.classes)
        if dataset.holdout:  # scenes hold many classes: a plain draw, one stratum
            seen_as_eval = load(True, False, self.bad_samples)  # no flips, no crops
            self.train_set, self.holdout_set = split_holdout(
                self.train_set, seen_as_eval, [0] * len(seen_as_eval), dataset.holdout
            )
        self.quant_scope = segmenter_scope(task.head)

    def build_model(self) -> nn.Module:
        return build_segmenter(
            self.task_config.head,
            self.model_config.name,
            len(self.classes),
            self.task_config.aux_loss,
            self.model_config.pretrained,
            self.weights_dir,
        )

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        images, masks = pair_to_device(batch, model)
        outputs = model(images)
        loss = F.cross_entropy(outputs["out"], masks, ignore_index=IGNORE_INDEX)
        if "aux" in outputs:
            loss = loss + AUX_WEIGHT * F.cross_entropy(
                outputs["aux"], masks, ignore_index=IGNORE_INDEX
            )
        return loss

    def evaluate(
        self, model: nn.Module, loader: DataLoader, predictions_path: Path | None = None
    ) -> dict[str, float]:
        """mIoU and pixel accuracy in percent, and the IoU of each class (NaN for a class
        absent from both the truth and the predictions: it is left out of the mean). Scores
        only: predictions_path is not written (masks are not worth it)."""
        matrix = ConfusionMatrix(len(self.classes))
        with self.evaluating(model):
            for batch in eval_batches(loader, self.trainer_config.progress):
                images, masks = pair_to_device(batch, model)
                matrix.update(masks, model(images)["out"].argmax(dim=1))
        scores = matrix.compute()
        per_class = zip(self.classes, scores["iou_per_class"], strict=True)
        return {
            "miou": scores["miou"],
            "pixel_acc": scores["pixel_acc"],
            **{f"iou_{name}": iou for name, iou in per_class},
        }
