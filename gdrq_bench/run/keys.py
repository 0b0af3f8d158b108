"""The keys of a run, side by side: the float model's cache key (what it is trained from), the
run's (what its per-epoch checkpoints belong to), and the spec hash of its results row (which
rows are repeats of one configuration).

They are built in opposite ways on purpose. The float cache key lists what the float model
depends on, so the runs of a grid over quantization knobs share one float model; the run key
hashes the whole config but what cannot change a number, so a new key splits it by default.
Each trainer key is in exactly one of FLOAT_TRAINER_KEYS and AFTER_FLOAT_TRAINER_KEYS (a test
keeps it so): a new one must be placed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gdrq_bench.quant import QuantSpec, method_knobs
from gdrq_bench.run.budget import QAT, finetune_stages, is_ptq
from gdrq_bench.training import distributed

# Bump when a code change alters the float model a config trains (2: BatchNorm momentum of
# models trained from scratch; 3: the thread and process counts in effect, not the configured
# ones), so caches made before it are not reused.
FLOAT_CACHE_VERSION = 3

# Task keys that only act after the float model is trained: they do not split its cache.
AFTER_FLOAT_TASK_KEYS = ("quantize", "voc_ap")
# Trainer keys of the float stage besides trainer.fp, in the order the key lists them.
FLOAT_TRAINER_KEYS = ("optimizer", "weight_decay", "batch_size", "max_train_batches", "grad_clip")
# Trainer keys that act after the float stage or change no number (trainer.threads acts
# through the thread count in effect, which the key holds whoever set it).
AFTER_FLOAT_TRAINER_KEYS = (
    "reshape",
    "qat",
    "eval_batch_size",
    "warmup_steps",
    "finetune_batches",
    "max_eval_batches",
    "fold_check_batches",
    "fold_check_inputs",
    "fold_tolerance",
    "threads",
    "fused_kernels",
    "progress",
    "resume",
    "probes",
    "equal_budget",
    "float_control",
    "eval_quant",
    "device",
    "schedule",
    "calibrate",
)

# Trainer keys of the fine-tuning recipe (the stages after the float model): with the effective
# spec they make a row's spec_hash.
FINETUNE_RECIPE_KEYS = (
    "reshape",
    "qat",
    "warmup_steps",
    "finetune_batches",
    "equal_budget",
    *FLOAT_TRAINER_KEYS,  # the same optimizer, batches and clipping fine-tune
)

# Keys added to a hashed group after caches existed, with the value that does what the config
# did before them: at that value they stay out of the float cache key and the run key.
ADDED_KEY_DEFAULTS = {
    "dataset.holdout": 0,
    "plugins": [],
    "trainer.schedule": QAT,
    "method.scale_clip_8bit": True,
    "trainer.calibrate.bn_reestimate": False,
    "trainer.fold_check_inputs": 256,
}
_NO_DEFAULT = object()

# Keys that decide where things are written or how they are shown, not what is computed.
NOT_IN_RUN_KEY = {
    "results_dir": None,
    "cache_dir": None,
    "checkpoint_dir": None,
    "logger": None,
    "min_free_mb": None,
    "export": None,  # acts after the last training stage
    # probes score copies of the model, and so does the float control (its random-number
    # draws restored after it); the fused kernels give the eager form's numbers
    # fold_tolerance: whether a run passes, not what it computes
    # eval_quant: whether the fake-quantized model is scored, not what any model computes
    "trainer": (
        "resume",
        "progress",
        "probes",
        "fused_kernels",
        "float_control",
        "fold_tolerance",
        "eval_quant",
    ),
}


def _without_added_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The plain config without the keys added after caches were made, where they hold the
    value that changes nothing (ADDED_KEY_DEFAULTS): the keys of caches made before those
    keys existed stay valid."""
    config = copy.deepcopy(config)
    for dotted, neutral in ADDED_KEY_DEFAULTS.items():
        *groups, key = dotted.split(".")
        node = config
        for group in groups:
            node = node.get(group, {})
        if node.get(key, _NO_DEFAULT) == neutral:
            del node[key]
    return config


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)


def float_cache_key(cfg: DictConfig) -> str:
    """Everything that decides the float model trained here."""
    trainer = cfg.trainer
    task = {k: v for k, v in _plain(cfg.task).items() if k not in AFTER_FLOAT_TASK_KEYS}
    parts = {
        "version": FLOAT_CACHE_VERSION,
        "task": task,
        "model": _plain(cfg.model),
        "dataset": _without_added_defaults(_plain(cfg))["dataset"],
        "fp": _plain(trainer.fp),
        "train": [
            *(trainer[key] for key in FLOAT_TRAINER_KEYS),
            # the thread count changes the trained weights; the process count the batches
            # (batch_size is per process)
            *_counts(),
        ],
        "seed": cfg.fp_seed,
    }
    return _digest(parts)


def run_key(cfg: DictConfig) -> str:
    """A hash of everything in the config that can change the run's numbers."""
    config = _without_added_defaults(_plain(cfg))
    if not is_ptq(cfg):  # calibration settings change nothing a QAT run computes
        config["trainer"].pop("calibrate", None)
    for key, subkeys in NOT_IN_RUN_KEY.items():
        if subkeys is None:
            config.pop(key, None)
        else:
            for subkey in subkeys:
                config.get(key, {}).pop(subkey, None)
    return _digest(config)


def spec_hash(cfg: DictConfig, spec: QuantSpec) -> str:
    """A hash of what a run does after its float model: the knobs its method reads (with
    their values; the others change nothing), the fine-tuning recipe (post-training
    quantization: the calibration and the batches it reads) and the task's after-float keys.
    Rows with the same spec_hash and float model (fp_hash) differ only in
    their seed: the leaderboard averages them, whatever command line set the knobs."""
    knobs = sorted(method_knobs(spec.method, post_training=is_ptq(cfg)))
    recipe_keys = ("calibrate", *FLOAT_TRAINER_KEYS) if is_ptq(cfg) else FINETUNE_RECIPE_KEYS
    trainer = _without_added_defaults(_plain(cfg))["trainer"]
    parts = {
        "spec": {name: getattr(spec, name) for name in knobs},
        "recipe": {key: trainer[key] for key in recipe_keys},
        "task": {key: _plain_value(cfg.task.get(key)) for key in AFTER_FLOAT_TASK_KEYS},
    }
    return _digest(parts)


def _plain_value(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def float_control_key(cfg: DictConfig, spec: QuantSpec, fp_hash: str) -> str:
    """What the equal-budget float control's score depends on: the float model's weights, the
    fine-tuning recipe as the method splits it (a reshape stage or not), the seed, the thread
    and process counts, and what it is evaluated on. Methods of one split share it."""
    parts = {
        "float_model": fp_hash,
        "model": _plain(cfg.model),
        "recipe": {key: _plain_value(cfg.trainer[key]) for key in FINETUNE_RECIPE_KEYS},
        "stages": finetune_stages(spec),
        "seed": cfg.seed,
        "counts": _counts(),
        "evaluation": _evaluation(cfg),
    }
    return _digest(parts)


def float_scores_key(cfg: DictConfig, fp_hash: str) -> str:
    """What the float model's scores depend on: its weights, the model, the thread and process
    counts, and what it is evaluated on; the runs of a grid that share a float model share
    them."""
    parts = {
        "float_model": fp_hash,
        "model": _plain(cfg.model),
        "counts": _counts(),
        "evaluation": _evaluation(cfg),
    }
    return _digest(parts)


def _counts() -> list[int]:
    """The thread and process counts in effect: the thread count changes CPU rounding."""
    return [torch.get_num_threads(), distributed.world_size()]


def _evaluation(cfg: DictConfig) -> list[Any]:
    """What a model is scored on: the data set (its held-out split included), the task and
    the cap on evaluation batches."""
    return [_plain(cfg.dataset), _plain(cfg.task), cfg.trainer.max_eval_batches]
