"""What GDRQ costs on CPU: a training step of the fake-quantized model against the float one,
inference of the folded model against the float one, and folded inference with 4 groups and
per channel against folded per-tensor inference: the paper's zero-cost claim (torchvision
resnet18, 10 classes).

    python bench/step_cost.py [--batch 8] [--size 64] [--warmup 5] [--repeats 15] [--threads 2]

The two sides of each comparison are timed alternately in one process, so a change in machine
load hits both; the table gives medians and means in milliseconds and the ratio of medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models

from gdrq_bench.quant import QuantSpec, fold_model, quantize_model

Step = Callable[[], object]


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Step:
    """One forward, cross-entropy backward and SGD step of `model` (in train mode)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def inference(model: nn.Module, images: torch.Tensor) -> Step:
    """One eval-mode forward of `model` without autograd."""
    model.eval()

    def step() -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    return step


def folded_copy(
    model: nn.Module, spec: QuantSpec, groups: int | str, images: torch.Tensor
) -> nn.Module:
    """`model` quantized with `groups` groups (activation clips seen on two batches), folded."""
    quantized = quantize_model(model, dataclasses.replace(spec, groups=groups)).train()
    with torch.no_grad():
        for _ in range(2):
            quantized(images)
    return fold_model(quantized.eval())


def time_alternately(
    first: Step, second: Step, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of each timed call of `first` and `second`, called in turn."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for step, record in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            step()
            record.append(1000 * (time.perf_counter() - start))
    return times


def table(rows: list[tuple[str, list[float], str, list[float]]]) -> str:
    """Markdown: per comparison, a row for the baseline and one for the variant."""
    lines = ["| case | median (ms) | mean (ms) | median / first median |", "|---|---:|---:|---:|"]
    for baseline_name, baseline, variant_name, variant in rows:
        base = statistics.median(baseline)
        for name, times in ((baseline_name, baseline), (variant_name, variant)):
            median, mean = statistics.median(times), statistics.fmean(times)
            lines.append(f"| {name} | {median:.1f} | {mean:.1f} | {median / base:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, 10, (args.batch,))
    float_model = models.resnet18(num_classes=10)
    spec = QuantSpec()
    quant_model = quantize_model(float_model, spec)

    float_train, quant_train = time_alternately(
        train_step(float_model, images, labels),
        train_step(quant_model, images, labels),
        args.warmup,
        args.repeats,
    )
    folded = fold_model(quant_model)
    float_infer, folded_infer = time_alternately(
        inference(float_model, images), inference(folded, images), args.warmup, args.repeats
    )
    per_tensor, *grouped = (
        folded_copy(float_model, spec, groups, images) for groups in (1, 4, "per_channel")
    )
    group_rows = []
    for name, model in zip(("4 groups", "per channel"), grouped):
        base, variant = time_alternately(
            inference(per_tensor, images), inference(model, images), args.warmup, args.repeats
        )
        group_rows.append(
            ("inference, folded per-tensor", base, f"inference, folded {name}", variant)
        )

    print(
        f"resnet18, batch {args.batch}x3x{args.size}x{args.size}, {args.threads} threads, "
        f"{args.warmup} warm-up + {args.repeats} timed calls each; quantized: "
        f"{spec.method} W{spec.w_bits}A{spec.a_bits}, groups {spec.groups}, alpha {spec.alpha} "
        f"(searched again every {spec.alpha_every} training steps, which the mean includes)\n"
    )
    print(
        table(
            [
                ("training step, float", float_train, "training step, GDRQ", quant_train),
                ("inference, float", float_infer, "inference, folded GDRQ", folded_infer),
                *group_rows,
            ]
        )
    )


if __name__ == "__main__":
    main()
