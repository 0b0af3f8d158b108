"""The two cache keys of a run, side by side: the float model's (what it is trained from) and
the run's (what its per-epoch checkpoints belong to).

They are built in opposite ways on purpose. The float cache key lists what the float model
depends on, so the runs of a grid over quantization knobs share one float model; the run key
hashes the whole config but what cannot change a number, so a new key splits it by default.
Each trainer key is in exactly one of FLOAT_TRAINER_KEYS and AFTER_FLOAT_TRAINER_KEYS (a test
keeps it so): a new one must be placed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gdrq_bench import distributed

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
    "threads",
    "fused_kernels",
    "progress",
    "resume",
    "probes",
    "equal_budget",
    "device",
)

# Keys that decide where things are written or how they are shown, not what is computed.
NOT_IN_RUN_KEY = {
    "results_dir": None,
    "cache_dir": None,
    "checkpoint_dir": None,
    "logger": None,
    "min_free_mb": None,
    "export": None,  # acts after the last training stage
    # probes score copies of the model; the fused kernels give the eager form's numbers
    "trainer": ("resume", "progress", "probes", "fused_kernels"),
}


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
        "dataset": _plain(cfg.dataset),
        "fp": _plain(trainer.fp),
        "train": [
            *(trainer[key] for key in FLOAT_TRAINER_KEYS),
            # the thread count in effect changes CPU rounding, so the trained weights; the
            # process count the batches (batch_size is per process)
            torch.get_num_threads(),
            distributed.world_size(),
        ],
        "seed": cfg.fp_seed,
    }
    return _digest(parts)


def run_key(cfg: DictConfig) -> str:
    """A hash of everything in the config that can change the run's numbers."""
    config = _plain(cfg)
    for key, subkeys in NOT_IN_RUN_KEY.items():
        if subkeys is None:
            config.pop(key, None)
        else:
            for subkey in subkeys:
                config.get(key, {}).pop(subkey, None)
    return _digest(config)
