"""The training loop's learning-rate schedule: cosine decay, with an optional linear warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from gdrq_bench.training.engine import lr_schedules


@pytest.mark.parametrize("warmup", [0, 5])
def test_schedule_is_cosine_times_the_warmup_ramp(warmup: int) -> None:
    total, base = 20, 0.1
    parameter = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([parameter], lr=base)
    schedules = lr_schedules(opt, total, warmup)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        for schedule in schedules:
            schedule.step()
    for step, lr in enumerate(seen):
        ramp = min(1.0, (step + 1) / (warmup + 1)) if warmup else 1.0
        cosine = 0.5 * (1 + math.cos(math.pi * step / total))
        assert lr == pytest.approx(base * ramp * cosine, rel=1e-9, abs=1e-15), step
