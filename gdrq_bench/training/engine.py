"""The training loop, task-agnostic: optimizer, schedule, progress, a finite-loss guard,
per-epoch checkpoint state and data-parallel training."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from gdrq_bench.config.errors import GdrqError, TrainingError
from gdrq_bench.training import distributed
from gdrq_bench.training.checkpoint import capture_rng, restore_rng

log = logging.getLogger(__name__)


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW; no weight decay on 1-D tensors (BN, biases, clips)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() > 1 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise GdrqError(f"trainer.optimizer={name!r} is unknown: use 'sgd' or 'adamw'")


def lr_schedules(
    opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """Cosine decay over `total_steps`, times a linear ramp (1/(w+1), 2/(w+1), ... 1) over the
    first `warmup_steps`; both are stepped once per training step."""
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, total_steps))
    if warmup_steps <= 0:
        return [cosine]
    ramp = torch.optim.lr_scheduler.LinearLR(opt, 1 / (warmup_steps + 1), total_iters=warmup_steps)
    return [cosine, ramp]  # chained: the two factors multiply


def train_stage(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    *,
    stage: str,
    epochs: int,
    lr: float,
    optimizer: str,
    weight_decay: float,
    max_batches: int | None = None,
    grad_clip: float | None = None,
    warmup_steps: int = 0,
    progress: bool = True,
    resume: dict[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> list[float]:
    """Train for `epochs` epochs with a cosine learning-rate schedule; the mean loss per epoch.

    grad_clip bounds the gradient norm of each step (detectors trained from scratch need it).
    warmup_steps ramps the learning rate up linearly over the first steps: a fresh AdamW moves
    every weight by about lr per step whatever its gradient, which knocks a trained model far
    off (seen: a fine-tuned detector's loss from 0.4 to 4 in its first epoch at lr 1e-3).
    After every epoch `on_epoch_end` gets the state `resume` takes to continue from there:
    model, optimizer, schedule, random-number states and the losses so far.
    """
    steps_per_epoch = min(len(loader), max_batches or len(loader))
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    schedules = lr_schedules(opt, epochs * steps_per_epoch, warmup_steps)
    epoch_losses: list[float] = []
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        for schedule, state in zip(schedules, resume["schedules"], strict=True):
            schedule.load_state_dict(state)
        restore_rng(resume["rng"], loader.generator)
        epoch_losses = list(resume["losses"])
        log.info("%s: resumed after epoch %d/%d", stage, len(epoch_losses), epochs)
    trained = distributed.wrap(model)
    for epoch in range(len(epoch_losses), epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        trained.train()
        total, count = 0.0, 0
        batches = tqdm(
            islice(loader, steps_per_epoch),
            total=steps_per_epoch,
            desc=f"{stage} {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for step, batch in enumerate(batches):
            if batch is None:  # every sample of it was unreadable and skipped
                continue
            loss = loss_fn(trained, batch)
            if not math.isfinite(loss.item()):
                raise TrainingError(
                    f"stage '{stage}': loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            for schedule in schedules:
                schedule.step()
            total, count = total + loss.item(), count + 1
            batches.set_postfix(loss=f"{total / count:.4f}")
        epoch_losses.append(total / max(count, 1))
        log.info("%s epoch %d/%d: loss %.4f", stage, epoch + 1, epochs, epoch_losses[-1])
        if on_epoch_end is not None:
            on_epoch_end(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "schedules": [schedule.state_dict() for schedule in schedules],
                    "rng": capture_rng(loader.generator),
                    "losses": epoch_losses,
                }
            )
    return epoch_losses
