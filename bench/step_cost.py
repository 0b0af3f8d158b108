"""What GDRQ costs to train and to run, against float and against Brevitas, as ratios.

    python bench/step_cost.py [--models resnet18,resnet50] [--sizes 64,224] [--batches 8,32]
                              [--device cpu|cuda] [--threads 2] [--budget 20]
    python bench/step_cost.py --runs digits,detection [--threads 2] [--work DIR]

For each model (torchvision, 10 classes), input size and batch: a training step (forward,
cross-entropy backward, SGD step) of the float model, of GDRQ's fake-quantized model
(W4A4, 4 groups) with its fused CPU kernels and in eager form (gdrq_bench/quant/fused.py;
trainer.fused_kernels=false) and of Brevitas' QAT model (method=brevitas:
gdrq_bench/quant/brevitas.py, W4A4, per-channel weight scales), timed in turn; then inference
of the float model and of GDRQ's folded models with 1 group (per tensor), 4 groups and one
group per channel, timed in turn. Timing the
variants in turn inside one process lets a change in machine load hit all of them. Each case
gets 2 warm-up rounds, then as many timed rounds as fit in --budget seconds (5 to 30); the
table gives the median round of the baseline in ms and the ratios of medians. Brevitas is
left out, with a note, if it is not installed (pip install -e '.[bench]').

`--runs` compares whole runs instead: `gdrq-run` of GDRQ and of min-max at equal fine-tuning
budgets (trainer.equal_budget=true, the default) on the presets named (RUN_PRESETS: the digits
default and shapes detection with ResNet-18, at the small budgets given there), one after
the other after a float run that fills the float-model cache both read. The table gives each
run's training seconds per stage (its timings.json), its wall time less the float stage, and
GDRQ's over min-max's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models

from gdrq_bench.quant import QuantScope, QuantSpec, fold_model, quantize_model
from gdrq_bench.quant.fused import use_fused_kernels

Step = Callable[[], object]
WARMUP = 2
MIN_REPEATS, MAX_REPEATS = 5, 30
HAS_BREVITAS = importlib.util.find_spec("brevitas") is not None


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Step:
    """One forward, cross-entropy backward and SGD step of `model` (in train mode)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def eager(step: Step) -> Step:
    """`step` with the fused fake-quantization kernels off."""

    def eager_step() -> object:
        use_fused_kernels(False)
        try:
            return step()
        finally:
            use_fused_kernels(True)

    return eager_step


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


def time_in_turn(steps: list[Step], budget_s: float, device: torch.device) -> list[list[float]]:
    """Milliseconds of each timed call of each step, the steps called in turn."""

    def timed(step: Step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return 1000 * (time.perf_counter() - start)

    round_ms = 0.0
    for _ in range(WARMUP):
        round_ms = sum(timed(step) for step in steps)
    repeats = max(MIN_REPEATS, min(MAX_REPEATS, int(1000 * budget_s / max(round_ms, 1e-3))))
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, record in zip(steps, times):
            record.append(timed(step))
    return times


@dataclasses.dataclass
class CaseResult:
    name: str
    train_ms: float  # float training step, median
    train_ratios: dict[str, float]  # variant -> median / float median
    infer_ms: float  # float inference, median
    infer_ratios: dict[str, float]
    repeats: tuple[int, int]


def ratios(times: list[list[float]], names: list[str], base: int = 0) -> dict[str, float]:
    medians = [statistics.median(t) for t in times]
    return {name: medians[i] / medians[base] for i, name in enumerate(names) if i != base}


def measure(
    model_name: str, size: int, batch: int, device: torch.device, budget_s: float
) -> CaseResult:
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    float_model = getattr(models, model_name)(num_classes=10).to(device)
    spec = QuantSpec()
    trainees = {
        "float": float_model,
        "GDRQ": quantize_model(float_model, spec),
        "GDRQ eager": quantize_model(float_model, spec),
    }
    if HAS_BREVITAS:
        from gdrq_bench.quant.brevitas import brevitas_model

        # calibrated, so past the statistics phase: the QAT steady state
        brevitas = dataclasses.replace(spec, method="brevitas")
        trainees["Brevitas"] = brevitas_model(float_model, brevitas, QuantScope(), [images])
    steps = {name: train_step(model, images, labels) for name, model in trainees.items()}
    steps["GDRQ eager"] = eager(steps["GDRQ eager"])
    train_times = time_in_turn(list(steps.values()), budget_s, device)
    folded = {
        f"folded {name}": folded_copy(float_model, spec, groups, images)
        for name, groups in (("per tensor", 1), ("4 groups", 4), ("per channel", "per_channel"))
    }
    infer_names = ["float", *folded]
    infer_times = time_in_turn(
        [inference(m, images) for m in (float_model, *folded.values())], budget_s, device
    )
    infer_ratios = ratios(infer_times, infer_names)
    infer_ratios.update(
        {f"{n} / per tensor": r for n, r in ratios(infer_times, infer_names, base=1).items()}
    )
    return CaseResult(
        name=f"{model_name} {size}x{size} b{batch}",
        train_ms=statistics.median(train_times[0]),
        train_ratios=ratios(train_times, list(trainees)),
        infer_ms=statistics.median(infer_times[0]),
        infer_ratios=infer_ratios,
        repeats=(len(train_times[0]), len(infer_times[0])),
    )


def table(results: list[CaseResult]) -> str:
    brevitas = "Brevitas" in results[0].train_ratios
    header = [
        "case",
        "float train step (ms)",
        "GDRQ / float",
        "GDRQ eager / float",
        *(["Brevitas / float"] if brevitas else []),
        "float inference (ms)",
        "folded GDRQ (4 groups) / float",
        "folded 4 groups / folded per tensor",
        "folded per channel / folded per tensor",
        "timed rounds (train, inference)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in results:
        cells = [
            r.name,
            f"{r.train_ms:.1f}",
            f"{r.train_ratios['GDRQ']:.2f}",
            f"{r.train_ratios['GDRQ eager']:.2f}",
            *([f"{r.train_ratios['Brevitas']:.2f}"] if brevitas else []),
            f"{r.infer_ms:.1f}",
            f"{r.infer_ratios['folded 4 groups']:.2f}",
            f"{r.infer_ratios['folded 4 groups / per tensor']:.2f}",
            f"{r.infer_ratios['folded per channel / per tensor']:.2f}",
            f"{r.repeats[0]}, {r.repeats[1]}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Whole-run presets: gdrq-run overrides kept small enough that both methods run in minutes on
# 2 cores; every other key is the preset's default.
RUN_PRESETS = {
    "digits": ["trainer.fp.epochs=2", "trainer.reshape.epochs=1", "trainer.qat.epochs=1"],
    "detection": [
        "task=detection",
        "model=resnet18",
        "trainer.fp.epochs=1",
        "trainer.reshape.epochs=1",
        "trainer.qat.epochs=1",
        "trainer.max_train_batches=24",
        "trainer.max_eval_batches=2",
    ],
}
RUN_STAGES = ("reshape", "qat")  # min-max has no reshape stage: its QAT takes both budgets
RUN_COLUMNS = (*RUN_STAGES, "fine-tuning", "wall less fp")


def whole_run(preset: str, method: str, threads: int, work: Path) -> dict[str, float]:
    """Seconds of one gdrq-run: per stage (timings.json), and the wall time less the float
    stage's training."""
    run_dir = work / f"{preset}_{method}"
    command = [
        sys.executable,
        "-c",
        "from gdrq_bench.cli.run import main; main()",  # gdrq-run of this interpreter
        *RUN_PRESETS[preset],
        *(["bits=32"] if method == "float" else [f"method={method}"]),
        f"trainer.threads={threads}",
        "trainer.progress=false",
        "logger=none",
        f"results_dir={work / 'results'}",
        f"cache_dir={work / 'cache'}",
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    timings = run_dir / "timings.json"  # absent in runs of code before it was written
    stages = json.loads(timings.read_text())["stage_train_s"] if timings.exists() else {}
    fp = stages.get("fp", 0.0)
    rows = [
        row
        for table in sorted((work / "results").glob("**/*.csv"))
        for row in csv.DictReader(table.open())
        if row["run_dir"].endswith(run_dir.name)
    ]
    finetune = float(rows[-1]["train_s"]) - fp  # the row's training seconds, less the float stage
    return {**stages, "fine-tuning": finetune, "wall less fp": wall - fp}


def run_table(presets: list[str], threads: int, work: Path) -> str:
    header = ["preset", "method", *(f"{key} (s)" for key in RUN_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for preset in presets:
        whole_run(preset, "float", threads, work)  # trains the float model both runs load
        seconds = {
            method: whole_run(preset, method, threads, work) for method in ("gdrq", "minmax")
        }
        seconds["GDRQ / min-max"] = {
            key: seconds["gdrq"][key] / seconds["minmax"][key]
            for key in ("fine-tuning", "wall less fp")
        }
        for method, values in seconds.items():
            cells = [f"{values[key]:.2f}" if key in values else "" for key in RUN_COLUMNS]
            lines.append("| " + " | ".join([preset, method, *cells]) + " |")
        print(f"ran {preset}", file=sys.stderr, flush=True)
    return "\n".join(lines)


def describe(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU, {threads} threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--sizes", default="64,224", help="image heights and widths")
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per case's rounds")
    parser.add_argument("--runs", help="compare whole runs on these presets: digits,detection")
    parser.add_argument("--work", help="where --runs writes its runs (default: a temporary dir)")
    args = parser.parse_args(argv)
    if args.runs:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(args.work or scratch)
            table_text = run_table(args.runs.split(","), args.threads, work)
        budgets = "; ".join(f"{name}: {' '.join(keys)}" for name, keys in RUN_PRESETS.items())
        print(
            f"\nCPU, {args.threads} threads, torch {torch.__version__}; whole gdrq-run runs, "
            f"W4A4 4 groups, equal budgets; {budgets}\n"
        )
        print(table_text)
        return

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    for model_name in args.models.split(","):
        for size in map(int, args.sizes.split(",")):
            for batch in map(int, args.batches.split(",")):
                results.append(measure(model_name, size, batch, device, args.budget))
                print(f"measured {results[-1].name}", file=sys.stderr, flush=True)
    print(
        f"\n{describe(device, args.threads)}; GDRQ: W4A4, 4 groups, alpha searched every 10 "
        f"training steps (the median round rarely holds a search); Brevitas: "
        + ("W4A4, per-channel weight scales" if HAS_BREVITAS else "not installed, left out")
        + f"; {WARMUP} warm-up rounds, then timed rounds within {args.budget:g} s per case\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
