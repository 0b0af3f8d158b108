"""Structured configs: the types and defaults of every group; YAML files under conf/ are presets.

The bits, grouping and method groups are made from QuantSpec, where each quantization knob's
type and default are written once.
"""

from __future__ import annotations

from dataclasses import MISSING as MISSING_DEFAULT
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, get_origin, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from gdrq_bench.quant.spec import QuantSpec


@dataclass
class TaskConfig:
    name: str = "classification"


@dataclass
class DetectionTaskConfig(TaskConfig):
    name: str = "detection"
    detector: str = "retinanet"  # "retinanet", "faster_rcnn" or "ssdlite"
    quantize: str = "all"  # "backbone", "backbone_fpn" or "all" (backbone, neck and heads)
    voc_ap: str = "area"  # VOC AP: "area" under the interpolated curve or VOC07 "11point"


@dataclass
class ModelConfig:
    name: str = "resnet20"
    pretrained: bool = False  # torchvision weights (downloaded by torchvision on first use)
    checkpoint: str | None = None  # a float state_dict to start from instead of training


@dataclass
class SegmentationTaskConfig(TaskConfig):
    name: str = "segmentation"
    head: str = "deeplabv3"  # "deeplabv3", "fcn" or "lraspp"
    aux_loss: bool = False  # deeplabv3 / fcn: the auxiliary classifier on layer3, weight 0.5


@dataclass
class DatasetConfig:
    """What every task's data set has; each task's schema below adds its own keys."""

    name: str = "digits"
    root: str = MISSING
    image_size: int = 32
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = 0
    on_bad_sample: str = "fail"  # an image that cannot be decoded: fail (name it) or skip it
    # training images held out as a validation split (data/holdout.py), stratified by class;
    # 0: the standard split, every training image trains
    holdout: int = 0


@dataclass
class ClassificationDatasetConfig(DatasetConfig):
    resize: int = 32  # evaluation resize before the center crop (imagenet preset: 256)
    # "small" (pad + random crop), "fashion" (28x28 greyscale padded; crop + flip) or
    # "imagenet" (RandomResizedCrop + flip)
    preset: str = "small"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class DetectionDatasetConfig(DatasetConfig):
    name: str = "shapes"
    image_size: int = 128  # the detector's transform resizes every image to this side
    format: str = "coco"  # "coco" (pycocotools, metric bbox_ap) or "voc" (metric map50)
    # coco: paths under root, {split} replaced by train_split / val_split
    image_dir: str = "{split}"
    annotation_file: str = "annotations/instances_{split}.json"
    # voc: root is the VOCdevkit directory holding VOC<year>/
    years: list[str] = field(default_factory=lambda: ["2007"])
    classes: list[str] | None = None  # None: the 20 VOC classes


@dataclass
class SegmentationDatasetConfig(DatasetConfig):
    name: str = "shapes"
    image_size: int = 64  # the shapes scenes' side (real VOC images keep their own size)
    crop_size: int | None = None  # training crop (padded with ignore when larger); None: whole
    # root is the VOCdevkit directory holding VOC<year>/
    years: list[str] = field(default_factory=lambda: ["2012"])
    split_file: str | None = None  # an augmented training list (SBD's train_aug.txt)
    mask_dir: str = "SegmentationClass"  # SegmentationClassAug for the augmented masks
    classes: list[str] | None = None  # None: background and the 20 VOC classes


# Each QuantSpec field and the config key it is set by: the one table that makes the bits,
# grouping and method schemas (below, from QuantSpec's types and defaults), builds a run's
# spec (run/spec.py) and names the key in the message of a bad value.
SPEC_KEYS = {
    "w_bits": "bits.w",
    "a_bits": "bits.a",
    "groups": "grouping.groups",
    "group_strategy": "grouping.strategy",
    "alpha": "grouping.alpha",
    "alpha_every": "grouping.alpha_every",
    "regroup_every": "grouping.regroup_every",
    "search_points": "grouping.search_points",
    "method": "method.name",
    "k_w": "method.k_w",
    "k_a": "method.k_a",
    "weight_stat": "method.weight_stat",
    "act_stat": "method.act_stat",
    "act_momentum": "method.act_momentum",
    "first_last_bits": "method.first_last_bits",
    "weight_grad": "method.weight_grad",
    "clip_style": "method.clip_style",
    "scale_clip_qat": "method.scale_clip_qat",
    "skip": "method.skip",
    "scale_clip_8bit": "method.scale_clip_8bit",
}


def _schema_type(hint: Any) -> Any:
    """A QuantSpec field's type as OmegaConf can check it: a union (int | str) stays untyped,
    and QuantSpec checks it when the run's spec is built."""
    return hint if hint in (int, float, str, bool) or get_origin(hint) is list else Any


def _spec_schema(group: str) -> type:
    """The schema of a config group of QuantSpec knobs: its keys in SPEC_KEYS' order."""
    hints = get_type_hints(QuantSpec)
    defaults = {spec_field.name: spec_field for spec_field in fields(QuantSpec)}
    keys = []
    for name, key in SPEC_KEYS.items():
        key_group, _, key_name = key.partition(".")
        if key_group == group:
            spec_field = defaults[name]
            default = (
                field(default_factory=spec_field.default_factory)
                if spec_field.default is MISSING_DEFAULT
                else field(default=spec_field.default)
            )
            keys.append((key_name, _schema_type(hints[name]), default))
    schema = make_dataclass(f"{group.capitalize()}Config", keys)
    schema.__module__ = __name__
    return schema


BitsConfig = _spec_schema("bits")
GroupingConfig = _spec_schema("grouping")
MethodConfig = _spec_schema("method")


@dataclass
class StageConfig:
    epochs: int = 1
    lr: float = 0.01


@dataclass
class CalibrateConfig:
    """Post-training quantization (trainer.schedule=ptq): what the calibrate stage reads and
    does in place of reshape and QAT (docs: post-training quantization)."""

    # training batches it reads (never evaluation images): 8 x 128 = 1,024 Fashion-MNIST
    # images, the count MQBench's PTQ recipes calibrate ImageNet on
    batches: int = 8
    # each activation clip: max |a|, a percentile of |a|, or mse (the QL_2 optimum: the
    # range the Fashion-MNIST bench chose on its validation split, docs: post-training)
    act_range: str = "mse"
    percentile: float = 99.99  # act_range=percentile: which one (0-100]
    rounding: str = "nearest"  # weights to the nearest level, or adaround (learned)
    adaround_iterations: int = 1000  # rounding=adaround: Adam steps per layer
    # re-estimate each BatchNorm's running statistics through the quantized model on the
    # calibration batches (AIMET's BN re-estimation), before bias correction
    bn_reestimate: bool = False
    bias_correction: bool = False  # take each layer's mean output error out of its bias


@dataclass
class TrainerConfig:
    fp: StageConfig = field(default_factory=lambda: StageConfig(epochs=10, lr=0.05))
    reshape: StageConfig = field(default_factory=lambda: StageConfig(epochs=2, lr=0.005))
    qat: StageConfig = field(default_factory=lambda: StageConfig(epochs=4, lr=0.01))
    optimizer: str = "sgd"  # "sgd" (momentum 0.9, nesterov) or "adamw"
    weight_decay: float = 5e-4
    batch_size: int = 64
    eval_batch_size: int = 256
    grad_clip: float | None = None  # max gradient norm per step; None: no clipping
    warmup_steps: int = 0  # linear learning-rate warm-up of the fine-tuning stages (reshape, qat)
    max_train_batches: int | None = None  # cap per epoch (smoke tests)
    # batches per epoch of the fine-tuning stages (reshape, qat), drawn from the shuffled
    # training set: a fine-tuning budget on large data sets; None: whole epochs
    finetune_batches: int | None = None
    max_eval_batches: int | None = None
    # evaluation batches the BN fold is checked on; the classification presets (default,
    # fashion, smoke) check it on 1 batch, the other tasks' small batches on 2
    fold_check_batches: int = 2
    # the first inputs of each of those batches the check runs: float64 costs several times
    # float32 on a CPU, and a fold error shows on any input (the smoke trainer checks 32)
    fold_check_inputs: int = 256
    # the largest fold error (float64, relative to each output's largest magnitude) a run
    # accepts: above it the run fails after training, naming the first layer that differs
    fold_tolerance: float = 1e-6
    threads: int | None = None  # torch.set_num_threads; None keeps torch's default
    # fake quantization in one pass per direction on the CPU, compiled on first use
    # (quant/fused.py); the same numbers as the eager form, which false runs
    fused_kernels: bool = True
    progress: bool = True
    resume: bool = False  # continue from the checkpoints of a killed run of the same config
    # score the model between stages (after reshape; rounded before QAT) into metrics.json
    probes: bool = True
    # every method fine-tunes reshape + qat epochs (one without a reshape stage, all in QAT)
    equal_budget: bool = True
    # the equal-budget float control (run/control.py): the float model fine-tuned as the
    # quantized one is, without quantizers, scored as the row's fp_ft; false: not run (fp_ft
    # empty), e.g. for a one-off ImageNet run
    float_control: bool = True
    # score the fake-quantized model too (the row's `quant`) where the folded one is deployed;
    # false leaves `quant` empty and saves a pass over the evaluation images: the fold check
    # already compares the two (in float64), and the bench tables read the folded model
    eval_quant: bool = True
    device: str = "auto"  # "auto" (this process's GPU if there is one), "cpu" or "cuda"
    # after the float model: "qat" (reshape, then quantization-aware training) or "ptq"
    # (post-training quantization: the calibrate stage below, nothing trained)
    schedule: str = "qat"
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "gdrq_bench"
    mode: str = "offline"


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    bits: BitsConfig = field(default_factory=BitsConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    # seeds the float model (init and float training); defaults to `seed`. Setting it apart
    # lets runs with several quantization seeds share one float model.
    fp_seed: int = "${seed}"  # type: ignore[assignment]  # an interpolation until resolved
    results_dir: str = "results"
    cache_dir: str = "${oc.env:GDRQ_CACHE,'~/.cache/gdrq_bench'}"
    # per-epoch checkpoints of unfinished runs, one folder per config (removed when it finishes)
    checkpoint_dir: str = "${cache_dir}/checkpoints"
    # each of results_dir, cache_dir and checkpoint_dir needs this much free space to start
    min_free_mb: int = 200
    # ONNX export of the folded model after its evaluation: none, exact (integer ops, proved
    # equal to the folded model), qdq (onnxruntime's int8 kernels, scored) or both
    export: str = "none"
    # modules imported before the run is checked: a data set, an export format or a method
    # that registers itself from outside the package (docs: extension seams)
    plugins: list[str] = field(default_factory=list)


def register_configs() -> None:
    """Register the schemas: conf/config.yaml extends base_config, and each task's YAML
    presets extend their group's <task>_schema."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="task", name="detection_schema", node=DetectionTaskConfig)
    store.store(group="dataset", name="classification_schema", node=ClassificationDatasetConfig)
    store.store(group="dataset", name="detection_schema", node=DetectionDatasetConfig)
    store.store(group="task", name="segmentation_schema", node=SegmentationTaskConfig)
    store.store(group="dataset", name="segmentation_schema", node=SegmentationDatasetConfig)
