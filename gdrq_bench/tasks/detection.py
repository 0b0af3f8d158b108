"""Object detection on the data sets of data/registry.py (COCO, VOC, the embedded shapes
scenes, any a plugin registers), scored as their format says: COCO's box AP through
pycocotools' COCOeval, or VOC's mAP@0.5 by the VOC protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from gdrq_bench.config.errors import check_choice
from gdrq_bench.config.schema import (
    DetectionDatasetConfig,
)
from gdrq_bench.data.bad_samples import GuardedDataset
from gdrq_bench.data.detection import CocoDetectionSet, VocDetectionSet, collate_detection
from gdrq_bench.data.holdout import split_holdout
from gdrq_bench.data.registry import dataset_loader
from gdrq_bench.metrics.coco_eval import coco_bbox_stats
from gdrq_bench.metrics.voc_map import voc_map
from gdrq_bench.models.detectors import (
    LAYOUTS,
    RawDetectorOutputs,
    build_detector,
    check_detector,
)
from gdrq_bench.tasks.base import Task
from gdrq_bench.tasks.common import device_of, eval_batches, write_json

VOC_AP = ("area", "11point")

DetectionSet = CocoDetectionSet | VocDetectionSet


def _source(images: Dataset) -> DetectionSet:
    """The detection set a loader's images come from, through its wrappers (the bad-sample
    guard, the evaluation cap's and the held-out split's Subsets)."""
    while isinstance(images, Subset | GuardedDataset):
        images = images.dataset
    return images


class DetectionTask(Task):
    name = "detection"
    dataset_schema = DetectionDatasetConfig
    collate = staticmethod(collate_detection)

    def setup(self, cache_dir: str) -> None:
        task, dataset, model = self.task_config, self.dataset_config, self.model_config
        check_detector(task.detector, model.name, task.quantize)
        check_choice("task.voc_ap", task.voc_ap, VOC_AP)
        load = dataset_loader("detection", dataset, cache_dir)  # the data set's source
        self.train_set, self.eval_set = load(True, True), load(False, False)
        if dataset.holdout:  # scenes hold many classes: a plain draw, one stratum
            seen_as_eval = load(True, False)  # the training images without the flips
            self.train_set, self.holdout_set = split_holdout(
                self.train_set, seen_as_eval, [0] * len(seen_as_eval), dataset.holdout
            )
        self.metric = "bbox_ap" if isinstance(self.eval_set, CocoDetectionSet) else "map50"
        self.quant_scope = LAYOUTS[task.detector].scope(task.quantize)

    def build_model(self) -> nn.Module:
        return build_detector(
            self.task_config.detector,
            self.model_config.name,
            self.eval_set.num_classes,
            self.dataset_config.image_size,
            self.model_config.pretrained,
            self.weights_dir,
        )

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        images, targets = _to_device(batch, model)
        return sum(model(images, targets).values())

    def fold_probe(self, model: nn.Module) -> nn.Module:
        return RawDetectorOutputs(model)

    def evaluate(
        self, model: nn.Module, loader: DataLoader, predictions_path: Path | None = None
    ) -> dict[str, float]:
        """Detect on the loader's images, write the detections as COCO results (original
        category ids; VOC images are named by their file stem) and score them against the
        annotations of the split they come from (held-out training images: the training
        annotations)."""
        source = _source(loader.dataset)
        detections, targets = self._detect(model, loader)
        results = [
            result
            for target, detection in zip(targets, detections, strict=True)
            for result in self._coco_results(source, target, detection)
        ]
        if predictions_path is not None:
            write_json(predictions_path, results)
        if isinstance(source, CocoDetectionSet):
            image_ids = [int(target["image_id"]) for target in targets]
            return coco_bbox_stats(source.coco, results, image_ids)
        return self._voc_metrics(detections, targets)

    def _detect(
        self, model: nn.Module, loader: DataLoader
    ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        device, progress = device_of(model), self.trainer_config.progress
        detections, targets = [], []
        with self.evaluating(model):
            for images, batch_targets in eval_batches(loader, progress):
                outputs = model([image.to(device) for image in images])
                detections += [{k: v.cpu() for k, v in d.items()} for d in outputs]
                targets += batch_targets
        return detections, targets

    @staticmethod
    def _coco_results(
        dataset: DetectionSet, target: dict[str, Tensor], detection: dict[str, Tensor]
    ) -> list[dict[str, Any]]:
        if isinstance(dataset, CocoDetectionSet):
            image_id: int | str = int(target["image_id"])
            categories = [dataset.label_to_category(int(label)) for label in detection["labels"]]
        else:
            image_id = dataset.stems[int(target["image_id"])]
            categories = [int(label) for label in detection["labels"]]
        boxes = detection["boxes"].double()
        boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
        return [
            {
                "image_id": image_id,
                "category_id": category,
                "bbox": [round(v, 3) for v in box.tolist()],
                "score": round(float(score), 5),
            }
            for box, score, category in zip(boxes, detection["scores"], categories, strict=True)
        ]

    def _voc_metrics(
        self, detections: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> dict[str, float]:
        """mAP@0.5 over the classes (labels shifted to 0-based) and the AP of each class."""
        scores = voc_map(
            [{**d, "labels": d["labels"] - 1} for d in detections],
            [{**t, "labels": t["labels"] - 1} for t in targets],
            num_classes=len(self.eval_set.classes),
            use_07_metric=self.task_config.voc_ap == "11point",
        )
        per_class = dict(zip(self.eval_set.classes, scores["ap_per_class"], strict=True))
        return {"map50": scores["map50"], **{f"ap50_{name}": ap for name, ap in per_class.items()}}


def _to_device(batch: Any, model: nn.Module) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    device = device_of(model)
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {k: v.to(device) if isinstance(v, Tensor) else v for k, v in target.items()}
        for target in targets
    ]
    return images, targets
