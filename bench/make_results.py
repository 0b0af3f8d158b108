"""`make bench`: run the benchmark steps and write bench/RESULTS.md from what they print.

    python bench/make_results.py [--steps STEP,...] [--jobs 2] [--tables-only]

STEP: float_recipe, choices, accuracy, ptq_range, ptq, digits, shapes, cost, export, eval or
time (default: every step, in that order; time reads the others' rows, so it comes last).

Each step's commands run in turn; what the last command of a step prints (a Markdown table)
is kept in bench/out/<step>.md with the commands and their wall time, and RESULTS.md is
assembled from those files under a description of this machine. `--steps` reruns some steps
and keeps the others' sections (from bench/out, else from the committed RESULTS.md).
`--tables-only` runs only each step's table command on the rows already in bench/results, for
a step whose runs were stopped part-way or ran elsewhere; its section says so. The GPU table,
bench/RESULTS_GPU.md, is written by bench/gpu.sh on a CUDA machine and only linked from here.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from gdrq_bench.reporting.provenance import git_sha

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench's own modules, when imported
import float_recipe
from accuracy import results_dir_of

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
PY = "python"  # shown in RESULTS.md; run with this interpreter


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    about: str
    commands: tuple[tuple[str, ...], ...]  # the last one prints the section's table
    results: str | None = None  # RESULTS_DIR[:DATASET] of the rows its runs write, if any


def _preset_results(preset: str, dataset: str | None = None) -> str:
    """Where a preset's rows are, for bench/bench_time.py: its results folder (one data set)."""
    return f"{results_dir_of(preset)}:{dataset}" if dataset else str(results_dir_of(preset))


def _preset_commands(preset: str, jobs: int, *table_args: str) -> tuple[tuple[str, ...], ...]:
    """bench/accuracy.py's runs of a preset, then its table (`table_args`: e.g. one data set)."""
    return (
        (PY, "bench/accuracy.py", "run", "--preset", preset, "--jobs", str(jobs)),
        (PY, "bench/accuracy.py", "table", "--preset", preset, *table_args),
    )


def steps(jobs: int) -> list[Step]:
    running = [
        Step(
            "float_recipe",
            "Float recipe: epochs to a plateau, chosen on a validation split",
            "Fashion-MNIST's 60,000 training images less 5,000 held out as a validation split "
            "(`dataset.holdout=5000`: stratified by class, a fixed draw), each float model of the"
            " accuracy step (ResNet-20, the 32x32 MobileNetV2) trained by `trainer=fashion` for "
            "8, 12, 18 and 27 epochs (`trainer.fp.epochs`); the embedded shapes scenes' 192 "
            "training scenes less 64 held out (a plain draw), each float model of the shapes "
            "tables (preset bench_shapes: RetinaNet ResNet-18, LR-ASPP MobileNetV3, DeepLabV3 "
            "ResNet-50) trained by its task's trainer for 12, 18, 27, 40, 60, 90 and 135 epochs. "
            "--jobs runs at once (2 on 2 cores: one thread each), in rounds of one number of "
            "epochs, the fewest first; a network whose plateau is found gets no longer runs, nor "
            "a run that would cost more than about 3 hours of one core. train min is the float "
            "stage's wall time on the shared machine, slowed when other processes share the cores"
            ' ("cached": a float model reused from the cache, not timed); a run\'s cost is its '
            "epochs times the network's minutes per epoch of its fastest run. The recipe is "
            "chosen on the validation figure alone: plateau at E, the smallest E whose next "
            "longer run E' (the shortest with E' >= 1.5 E) gains less than 0.1 points; without "
            "one, once the next longer run would cost more than about 3 hours of one core, the "
            "longest run that fits; the evaluation split's figure (the images the tables report) "
            "is shown for information only. Rows in bench/results/float_recipe/.",
            (
                (
                    PY,
                    "bench/float_recipe.py",
                    "run",
                    "--preset",
                    "bench_fashion",
                    "--jobs",
                    str(jobs),
                ),
                (
                    PY,
                    "bench/float_recipe.py",
                    "run",
                    "--preset",
                    "bench_shapes",
                    "--holdout",
                    "64",
                    "--epochs",
                    "12,18,27,40,60,90,135",
                    "--jobs",
                    str(jobs),
                ),
                (PY, "bench/float_recipe.py", "table"),
            ),
            str(float_recipe.RESULTS_DIR),
        ),
        Step(
            "choices",
            "GDRQ's knobs, chosen on the validation split",
            "The knobs whose defaults were chosen for GDRQ on Fashion-MNIST (issue 27), each "
            "run with every value the choice is between, on the accuracy step's float models "
            "and fine-tuning budget; seeds 0, 1 and 2. Only the 5,000 held-out training images "
            "are scored here (mean ± sample std (n)): the test split reports, never chooses. "
            "`method.act_stat`: the activation clip Scale-Clip trains with, the running "
            "maximum (`max_abs`) or the QL_2 (MSE) optimum of each batch (`mse`); "
            "`method.scale_clip_8bit`: at W8A8, Scale-Clip on every layer (`True`) or on none "
            "(`False`: 8-bit layers quantized as the first and last layers are); below 8 bits, "
            "with `act_stat=mse`, `method.k_w` (Scale-Clip's weight clip, 2, 3 or 4 x mean|W|) "
            "and `grouping.alpha` (the group clips searched, `search`, or learned from the "
            "search's start, `learned`); then, with `alpha=learned`, `method.clip_style` "
            "(`project` or a forward `clamp`), `method.scale_clip_qat` (Scale-Clip kept on in "
            "QAT) and `method.k_a` (0.8, 1 or 1.25 x the MSE clip), and the pair of `clamp` "
            "and `scale_clip_qat=True`. Every knob is pinned in the preset's commands; "
            "`scale_clip_8bit` reshapes no layer below 8 bits. Rows in "
            "bench/results/fashion_choices/.",
            _preset_commands("bench_fashion_choices", jobs),
            _preset_results("bench_fashion_choices"),
        ),
        Step(
            "accuracy",
            "Accuracy of every method on Fashion-MNIST",
            "Fashion-MNIST (zero-padded from 28x28 to 32x32): 55,000 training images, 5,000 "
            "held out as a validation split (`dataset.holdout=5000`, stratified by class), the "
            "10,000 test images for the tables. ResNet-20 and the 32x32 MobileNetV2 (width 0.5, "
            "depthwise convs), one float model per network (`fp_seed=0`) trained by "
            "`trainer=fashion` for the epochs the float recipe chose on the validation split. "
            "Every method then fine-tunes 3 epochs of 30 batches of 128 (reshape 1 + QAT 2 "
            "with Scale-Clip, QAT 3 without; Brevitas likewise), first and last layer at 8 "
            "bits, seeds 0, 1 and 2 at every width (DoReFa, which collapses, seed 0); the "
            "longer-budget tables: GDRQ, LSQ and groups_only at W4A4 and W3A3, seeds 0 and 1, "
            "with 5x the batches (`trainer.finetune_batches=150`). Rows are grouped by spec_hash "
            "and float model. top1 and NLL are of the deployed model (folded; Brevitas: its "
            "quantized model) on the test images; mean ± sample std (n). drop is the float "
            "model's top1 minus the deployed model's; drop_ft the equal-budget float control's "
            "(the float model fine-tuned by the same stages, batches and seed with no "
            "quantizer) minus the deployed model's: the quantization's loss alone. The last "
            "column is each method's top1 minus GDRQ's at that width (seed means), with a 95% "
            "t interval (bench/intervals.py) that holds both the test images' noise and the "
            "seeds': a seeds' term from the per-seed differences (seed s of the method minus "
            "seed s of GDRQ), a test images' term from the per-image differences net of the "
            "per-image flips the seeds' term already holds, and Welch-Satterthwaite degrees of "
            "freedom (with 3 seeds the quantile nears t(0.975, 2) = 4.30 where the seeds' noise "
            "dominates): **bold** where the interval excludes 0. A one-seed cell (DoReFa) "
            "borrows the seed spread pooled over the network's comparisons with >= 2 seeds, "
            "collapsed methods left out (†), or holds the test images' noise only (‡). Under "
            "each table, GDRQ's goals (the preset's `goals`: groups_only at every width, LSQ "
            "and Brevitas below 8 bits): met where the interval of the method minus GDRQ "
            "holds 0 or lies below it; then the same runs on the validation split: the "
            "figures any choice is made on. train s: a run's median training seconds (one "
            "thread, two runs sharing the two cores). Rows in bench/results/fashion/.",
            _preset_commands("bench_fashion", jobs),
            _preset_results("bench_fashion"),
        ),
        Step(
            "ptq_range",
            "Post-training activation range, chosen on the validation split",
            "The post-training step's float models and lines rounded to nearest (`minmax`, "
            "`groups_only per_channel max`, `groups_only per_channel`, `groups_only 4`, "
            "`gdrq`) at W4A8 and W4A4, calibration seed 0, each with the activation clips "
            "from max |a| (`act=max`), the 99.99th percentile of |a| (`act=percentile 99.99`) "
            "and the QL_2 optimum (no label: `mse`, gdrq-run's default since this choice): "
            "`trainer.calibrate.act_range`. Only the scores on the 5,000 "
            "held-out training images are shown (the rows hold the test split's too; no "
            "choice reads them). The rule (the preset's, written before its rows): per network, "
            "a range's score is its mean validation top1 over the five lines and two widths; "
            "a range replaces max where its score is higher on both networks; where both "
            "others do, the one with the higher mean of the two networks' scores; "
            "bench/knob_choice.py applies it, last in this section. The range chosen is "
            "pinned in preset bench_fashion_ptq. Rows in "
            "bench/results/fashion_ptq_range/.",
            _preset_commands("bench_fashion_ptq_range", jobs),
            _preset_results("bench_fashion_ptq_range"),
        ),
        Step(
            "ptq",
            "Post-training quantization on Fashion-MNIST",
            "The accuracy step's float models, nothing trained (`trainer.schedule=ptq`): 8 "
            "batches of 128 training images calibrate each run's activation clips, then the "
            "weights round to the nearest level or are learned (AdaRound, `+adaround`), and at "
            "W4A8 and W4A4 each line rounded to nearest also re-estimates BN's statistics "
            "through the quantized model (`+bn`); the "
            "calibration seed (which batches, AdaRound's draws) is 0, 1 or 2. Lines: per-tensor "
            "min-max (`minmax`), per-channel min-max (`groups_only per_channel max`), the "
            "per-channel and per-group QL_2 search (`groups_only per_channel`, `groups_only 4`) "
            "and GDRQ (`gdrq`: its Scale-Clip written into the weights, then its groups' "
            "search); first and last layer at 8 bits; the activation range the previous step "
            "chose (`trainer.calibrate.act_range`). Columns as in the accuracy step; vs GDRQ "
            "is each line's top1 minus GDRQ's calibrated the same way, with its 95% interval "
            "over seeds and test images (**bold** where it excludes 0); train s is a run's "
            "median calibration time. Under each table, the preset's `contrasts`: pairs of "
            "lines with the same interval (the QL_2 search against per-tensor and per-channel "
            "min-max; what Scale-Clip, AdaRound and BN re-estimation change). Rows in "
            "bench/results/fashion_ptq/.",
            _preset_commands("bench_fashion_ptq", jobs),
            _preset_results("bench_fashion_ptq"),
        ),
        Step(
            "digits",
            "Smoke table: the embedded digits task",
            "ResNet-20 on the 8x8 scikit-learn digits upscaled to 32x32 (1437 training, 360 "
            "validation images; one image is 0.28 points, so only gross failures separate), "
            "the default trainer (float 10 epochs, then 6 fine-tuning epochs for every method: "
            "reshape 2 and QAT 4 with Scale-Clip, QAT 6 without), one float model "
            "(`fp_seed=0`), seeds 0, 1 and 2 at every width; columns as above.",
            _preset_commands("bench_digits", jobs, "--dataset", "digits"),
            _preset_results("bench_digits", "digits"),
        ),
        Step(
            "shapes",
            "The embedded shapes scenes: detection and segmentation",
            "The shapes networks (preset bench_shapes): RetinaNet ResNet-18 detection "
            "(COCO layout, 128x128, box AP) and segmentation (LR-ASPP MobileNetV3-Large and "
            "DeepLabV3 ResNet-50, 64x64, mIoU), GDRQ and min-max at W8A8 and W4A4, 64 of the "
            "192 training scenes held out (the validation columns), the 64 evaluation scenes "
            "for the others; each float model trained for the epochs its float recipe chose, "
            "one seed (LR-ASPP: seeds 0-2); each task's trainer (6 fine-tuning epochs). drop_ft "
            "is against the equal-budget float control. No interval: AP and mIoU are not means "
            "over images, and these tasks keep no per-image results; the scenes are few (one "
            "scene is many points), so only large differences mean anything. Rows in "
            "bench/results/shapes/.",
            _preset_commands("bench_shapes", jobs),
            _preset_results("bench_shapes"),
        ),
        Step(
            "cost",
            "Training-step and inference cost on this CPU",
            "Ratios of medians, all variants of a case timed in turn in one process.",
            ((PY, "bench/step_cost.py"),),
        ),
        Step(
            "export",
            "Exported integer model: onnxruntime int8 against float",
            "Latency of GDRQ's W4A4 QDQ graph (gdrq-run export=qdq) in onnxruntime's int8 "
            "kernels against onnxruntime float, torch float and the folded simulation, random "
            "weights at 224x224; medians of rounds timed in turn in one process.",
            ((PY, "bench/export_cost.py"),),
        ),
        Step(
            "eval",
            "COCO evaluation cost",
            "The detection task's COCO metrics (faster-coco-eval) against plain pycocotools.",
            ((PY, "bench/eval_cost.py"),),
        ),
    ]
    return [*running, time_step(running, jobs)]


def time_step(running: list[Step], jobs: int) -> Step:
    """The last section: what the steps' runs cost, from their rows (bench/bench_time.py)."""
    located = [f"{step.name}={step.results}" for step in running if step.results]
    return Step(
        "time",
        "What make bench costs",
        "The hours the steps' runs took, read from their rows (bench/bench_time.py): a run "
        "costs the time from its run directory's start stamp to its `finished_at`, or its "
        "training seconds where a run resumed across several pieces took longer; a float "
        "model that a later step trained again counts once, where it was first trained; hours "
        f"at --jobs {jobs} are the hours of one core over {jobs} (one thread per run). A step "
        "whose grid is not complete counts the rows it has. The steps without rows (cost, "
        "export, eval) take minutes: their sections' wall time.",
        ((PY, "bench/bench_time.py", "--jobs", str(jobs), *located),),
    )


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
    """One paragraph: processor, cores, memory, OS, accelerator, library versions, code."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    libraries = ", ".join(
        f"{name} {_package(name)}"
        for name in ("torch", "torchvision", "brevitas", "pycocotools", "onnxruntime")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {gpu}; {platform.platform()}; "
        f"Python {platform.python_version()}, {libraries}, faster-coco-eval "
        f"{_package('faster-coco-eval')}; code {git_sha()}."
    )


def run_step(step: Step, tables_only: bool = False) -> None:
    """Run the step's commands (stderr and all but the last one's output pass through) and
    write bench/out/<step>.md; with `tables_only`, its last command alone."""
    started, sections = time.perf_counter(), []
    commands = step.commands[-1:] if tables_only else step.commands
    for index, command in enumerate(commands):
        last = index == len(commands) - 1
        print(f"make_results: {shlex.join(command)}", file=sys.stderr, flush=True)
        result = subprocess.run(
            [sys.executable, *command[1:]], stdout=subprocess.PIPE if last else None, text=True
        )
        if result.returncode != 0:
            sys.exit(f"make_results: error: `{shlex.join(command)}` failed")
        if last:
            sections.append(result.stdout.strip())
    minutes = (time.perf_counter() - started) / 60
    shown = "\n".join(shlex.join(command) for command in step.commands)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ran = (
        f"Table built {stamp} from the rows present in bench/results (the runs were not "
        f"repeated by this call), code {git_sha()}."
        if tables_only
        else f"Ran {stamp}, {minutes:.1f} min wall, code {git_sha()}."
    )
    OUT.mkdir(exist_ok=True)
    (OUT / f"{step.name}.md").write_text(
        f"## {step.title}\n\n{step.about}\n\n```\n{shown}\n```\n\n{ran}\n\n"
        + "\n".join(sections)
        + "\n"
    )


def committed_sections(results: Path) -> dict[str, str]:
    """The `## title` sections of an existing RESULTS.md, by title."""
    if not results.is_file():
        return {}
    blocks = results.read_text().split("\n## ")[1:]
    return {block.split("\n", 1)[0]: "## " + block.strip() for block in blocks}


def assemble(all_steps: list[Step]) -> str:
    parts = [
        "# gdrq_bench benchmarks",
        "",
        "Written by `make bench` (`python bench/make_results.py`); every table below is the "
        "output of the command shown above it, and each accuracy figure is a row of "
        "`bench/results/classification.csv` with the exact `gdrq-run` command that made it "
        "(Brevitas rows before `gdrq-run method=brevitas` name `python bench/brevitas_qat.py`, "
        "the script it replaced, in the history).",
        "",
        f"Machine: {machine()}",
        "",
        "On CUDA: [RESULTS_GPU.md](RESULTS_GPU.md), written by `bash bench/gpu.sh`.",
    ]
    kept = committed_sections(BENCH / "RESULTS.md")
    for step in all_steps:
        output = OUT / f"{step.name}.md"
        section = output.read_text().strip() if output.is_file() else kept.get(step.title)
        parts += ["", section or f"## {step.title}\n\nNot run yet."]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", help="a comma-separated list of steps (default: every step)")
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at once (the steps that run gdrq-run)"
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="only the table commands, on the rows present"
    )
    args = parser.parse_args(argv)
    all_steps = steps(args.jobs)
    chosen = args.steps.split(",") if args.steps else [step.name for step in all_steps]
    unknown = set(chosen) - {step.name for step in all_steps}
    if unknown:
        sys.exit(f"make_results: error: unknown steps {sorted(unknown)}")
    os.chdir(BENCH.parent)  # the commands and results paths are relative to the repo root
    for step in all_steps:
        if step.name in chosen:
            run_step(step, args.tables_only)
    (BENCH / "RESULTS.md").write_text(assemble(all_steps))
    print(f"make_results: wrote {BENCH / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
