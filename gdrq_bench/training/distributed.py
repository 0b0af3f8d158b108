"""Data-parallel training across processes (torchrun, or Slurm tasks started by submitit).

Every process trains on its share of each epoch through DistributedDataParallel; only the first
process (rank 0) evaluates, writes checkpoints, the float cache, the results row and logs, so
evaluation sees each image once and no table gets a row twice. A single process (the usual
case) never touches torch.distributed.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

log = logging.getLogger(__name__)

# Rank 0 evaluates while the others wait at a barrier: allow a long evaluation.
WAIT_TIMEOUT = timedelta(hours=2)


def env_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def _export_submitit_environment() -> None:
    """Under submitit with several tasks, export MASTER_ADDR, RANK, WORLD_SIZE... as torchrun
    does. CUDA_VISIBLE_DEVICES is left alone: each process picks cuda:LOCAL_RANK."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    environment = TorchDistributedEnvironment()
    if environment.world_size > 1:
        environment.export(set_cuda_visible_devices=False)


def start() -> None:
    """Join the process group when launched with more than one process."""
    _export_submitit_environment()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=WAIT_TIMEOUT)
    log.info("process %d of %d (%s)", rank(), world_size(), backend)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def device(choice: str) -> torch.device:
    """`auto`: this process's GPU when there is one, else the CPU."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and world_size() > 1:
        return torch.device("cuda", local_rank())
    return torch.device(choice)


def wrap(model: nn.Module) -> nn.Module:
    """The model as a training step sees it: DDP across processes, itself in one process.
    Quantizer parameters unused in a stage (a learned clip during reshape) are allowed."""
    if world_size() == 1:
        return model
    on_gpu = next(model.parameters()).is_cuda
    return DistributedDataParallel(
        model, device_ids=[local_rank()] if on_gpu else None, find_unused_parameters=True
    )


def train_sampler(dataset: Dataset, seed: int) -> DistributedSampler | None:
    """This process's shuffled share of the training set; None in one process."""
    if world_size() == 1:
        return None
    return DistributedSampler(dataset, shuffle=True, seed=seed)
