"""The fp stage: the float model's weights from a checkpoint file, torchvision's pretrained
weights, the float-model cache, or training here (then cached for the runs that share them)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from gdrq_bench.config.errors import ConfigError, DataError
from gdrq_bench.run.context import Run
from gdrq_bench.run.keys import float_cache_key
from gdrq_bench.run.outcome import FloatModel
from gdrq_bench.run.shared_cache import cache_lock
from gdrq_bench.training import distributed

log = logging.getLogger(__name__)


def stage_fp(run: Run, model: nn.Module) -> FloatModel:
    """The float model (built by the task), where its weights came from (checkpoint,
    pretrained, cache or trained here, from pretrained weights where they cover only a part)
    and their hash."""
    model, source = _float_weights(run, model)
    return FloatModel(model, source, weights_hash(model))


def weights_hash(model: nn.Module) -> str:
    """A content hash of a model's parameters and buffers: rows that share a float model
    share it, whatever the cache or checkpoint it came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def float_cache_path(cfg: DictConfig) -> Path:
    """Where the float model a config trains is cached (its key holds the thread count in
    effect: call it with the run's threads set)."""
    return Path(cfg.cache_dir).expanduser() / "fp" / f"{float_cache_key(cfg)}.pt"


def _float_weights(run: Run, model: nn.Module) -> tuple[nn.Module, str]:
    cfg = run.cfg
    if cfg.model.checkpoint:
        load_checkpoint(model, cfg.model.checkpoint, cfg.model.name)
        return model, "checkpoint"
    if cfg.model.pretrained and run.task.pretrained_complete:
        return model, "pretrained"
    cache = float_cache_path(cfg)
    with cache_lock(cache):
        if cache.is_file():
            model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
            log.info("float model reused from %s", cache)
            return model, "cache"
        run.train(model, "fp")
        if distributed.is_main():
            partial = cache.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), partial)
            os.replace(partial, cache)
        distributed.barrier()
    return model, "trained"


def load_checkpoint(model: nn.Module, path: str, model_name: str) -> None:
    """Float weights from a state_dict file (or a dict holding one under "model"); a file
    that is missing, not a state_dict or of another architecture is named in one line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"model.checkpoint={file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises pickle's, zipfile's or its own errors
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        message = f"model.checkpoint={file} is not a PyTorch state_dict file: {reason}"
        raise DataError(message) from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise DataError(f"model.checkpoint={file} holds a {type(state).__name__}, not a state_dict")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    misfit = f"model.checkpoint={file} does not fit model.name={model_name}:"
    if missing or unexpected:
        raise ConfigError(f"{misfit} missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    if reshaped:
        raise ConfigError(f"{misfit} other shapes: {'; '.join(reshaped[:3])}")
    model.load_state_dict(state)
