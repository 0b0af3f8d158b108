"""Image classification on the data sets of data/registry.py (ImageFolder trees: ImageNet, any
ImageFolder, the embedded digits; Fashion-MNIST's IDX files; any a plugin registers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from gdrq_bench.config.schema import ClassificationDatasetConfig
from gdrq_bench.data.classification_transforms import build_transforms
from gdrq_bench.data.holdout import split_holdout
from gdrq_bench.data.imagefolder import check_same_classes
from gdrq_bench.data.memo import memoized
from gdrq_bench.data.registry import dataset_loader
from gdrq_bench.models.classifiers import IMAGENET_CLASSES, build_classifier, check_classifier
from gdrq_bench.quant import QuantScope
from gdrq_bench.tasks.base import Task
from gdrq_bench.tasks.common import eval_batches, pair_to_device, write_json


class ClassificationTask(Task):
    name = "classification"
    dataset_schema = ClassificationDatasetConfig
    metric = "top1"
    quant_scope = QuantScope()  # the whole model; the last layer makes the predictions

    def setup(self, cache_dir: str) -> None:
        dataset, model = self.dataset_config, self.model_config
        check_classifier(model.name, model.pretrained)
        load = dataset_loader("classification", dataset, cache_dir)  # the data set's source
        train_transform, eval_transform = build_transforms(dataset)
        train_set, self.eval_set = load(True, train_transform), load(False, eval_transform)
        check_same_classes(train_set, self.eval_set)
        self.num_classes = len(train_set.classes)
        self.pretrained_complete = model.pretrained and self.num_classes == IMAGENET_CLASSES
        self.train_set = train_set
        if dataset.holdout:  # the same training images, seen through the evaluation transforms
            seen_as_evaluation = memoized(load(True, eval_transform), dataset.num_workers)
            self.train_set, self.holdout_set = split_holdout(
                train_set, seen_as_evaluation, train_set.targets, dataset.holdout
            )
        self.eval_set = memoized(self.eval_set, dataset.num_workers)

    def build_model(self) -> nn.Module:
        return build_classifier(
            self.model_config.name, self.num_classes, self.model_config.pretrained, self.weights_dir
        )

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        images, labels = pair_to_device(batch, model)
        return F.cross_entropy(model(images), labels)

    def evaluate(
        self, model: nn.Module, loader: DataLoader, predictions_path: Path | None = None
    ) -> dict[str, float]:
        """top1, top5 and the cross-entropy `nll`; with predictions_path, each image's label
        and top-1 prediction (in loader order) go there, for paired tests between models."""
        k = min(5, self.num_classes)
        correct1 = correct_k = total = 0
        nll = 0.0
        targets: list[int] = []
        predicted: list[int] = []
        with self.evaluating(model):
            for batch in eval_batches(loader, self.trainer_config.progress):
                images, labels = pair_to_device(batch, model)
                logits = model(images)
                top = logits.topk(k, dim=1).indices
                hits = top == labels[:, None]
                targets += labels.tolist()
                predicted += top[:, 0].tolist()
                correct1 += hits[:, 0].sum().item()
                correct_k += hits.any(dim=1).sum().item()
                nll += F.cross_entropy(logits.double(), labels, reduction="sum").item()
                total += labels.numel()
        if predictions_path is not None:
            write_json(predictions_path, {"target": targets, "predicted": predicted})
        return {
            "top1": 100.0 * correct1 / total,
            "top5": 100.0 * correct_k / total,
            "nll": nll / total,  # validation cross-entropy, nats per image (not in percent)
        }
