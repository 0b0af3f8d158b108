"""Per-epoch training checkpoints, so a killed run resumes where it stopped.

A run's checkpoints live in `checkpoint_dir/<run key>/<stage>.pt` (run/keys.py), one file per
training stage, replaced atomically at the end of every epoch, so the same command started again
finds them. A stage whose file holds all its epochs is not trained again; a partial one
continues from its last epoch with the optimizer, schedule and random-number states it had.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def capture_rng(loader_generator: torch.Generator | None) -> dict[str, Any]:
    """Every random-number state a training epoch draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "loader": None if loader_generator is None else loader_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], loader_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if loader_generator is not None and state["loader"] is not None:
        loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunCheckpoints:
    """The checkpoint files of one run; `writer` is False on every process but the first of a
    distributed run (they read, never write)."""

    def __init__(self, directory: Path, resume: bool, writer: bool = True) -> None:
        self.directory, self.resume, self.writer = directory, resume, writer
        if resume:
            found = sorted(path.stem for path in directory.glob("*.pt"))
            if found:
                log.info("resuming from %s (stages %s)", directory, ", ".join(found))
            else:
                log.info("trainer.resume=true: no checkpoint in %s, starting afresh", directory)
        elif writer and directory.is_dir() and any(directory.glob("*.pt")):
            log.warning(
                "checkpoints of an unfinished run of this config were in %s; starting afresh "
                "(trainer.resume=true continues from them)",
                directory,
            )
            shutil.rmtree(directory)

    def path(self, stage: str) -> Path:
        return self.directory / f"{stage}.pt"

    def load(self, stage: str) -> dict[str, Any] | None:
        """The stage's last checkpoint when resuming, else None."""
        file = self.path(stage)
        if not self.resume or not file.is_file():
            return None
        # Our own files: RNG states are numpy/python objects, so not weights_only.
        return torch.load(file, map_location="cpu", weights_only=False)

    def save(self, stage: str, state: dict[str, Any]) -> None:
        """Write atomically: a kill mid-write leaves the previous epoch's file intact."""
        if not self.writer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        file = self.path(stage)
        partial = file.with_suffix(f".{os.getpid()}.tmp")
        try:
            torch.save(state, partial)
            os.replace(partial, file)
        except BaseException:  # Ctrl-C or a full disk mid-write: no half-written file left
            partial.unlink(missing_ok=True)
            raise

    def finish(self) -> None:
        """The run wrote its row: nothing is left to resume."""
        if self.writer:
            shutil.rmtree(self.directory, ignore_errors=True)
