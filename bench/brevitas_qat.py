"""Brevitas QAT through gdrq-run's own classification run: the bench's outside baseline.

    python bench/brevitas_qat.py [gdrq-run overrides, e.g. bits=w2a4 seed=1 fp_seed=0]

The overrides compose gdrq-run's config, so the run gets what a gdrq-run run of the same
command gets: the same float model (gdrq-run's cache, keyed by fp_seed; trained here if
missing), data, seeds, threads, fine-tuning budget (the reshape and QAT epochs of
trainer.equal_budget, all spent in QAT at trainer.qat's learning rate) and first/last-layer
policy. Then Brevitas replaces gdrq_bench's quantizers (bench/brevitas_models.py): a
calibration pass over 8 training batches, the QAT stage, evaluation, and one row appended to
results_dir/classification.csv with method `brevitas`. Brevitas keeps BatchNorm apart (its
deployment folds it at export), so the row's `folded` and `fold_err` are empty and its `drop`
is fp - quant; of the spec's columns only the bits apply, the others are left empty. Its
equal-budget float control is min-max's (the same QAT-only fine-tuning; shared through the
control's cache), so `drop_ft` is fp_ft - quant; its spec_hash is its own.
"""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import replace
from datetime import datetime
from itertools import islice
from pathlib import Path

import torch
from brevitas_models import brevitas_copy, calibrate
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig

from gdrq_bench.config import CONFIG_DIR, quote_numeric_choice
from gdrq_bench.config.errors import ConfigError, GdrqError
from gdrq_bench.reporting.provenance import git_sha
from gdrq_bench.reporting.results import SPEC_COLUMNS, append_row
from gdrq_bench.reporting.run_logger import RunLogger
from gdrq_bench.run import (
    Run,
    prepare_run,
    result_row,
    row_table,
    run_key,
    seed_stage,
    stage_fp,
)
from gdrq_bench.run.context import VALIDATION
from gdrq_bench.run.control import stage_float_control
from gdrq_bench.run.keys import spec_hash
from gdrq_bench.training.checkpoint import RunCheckpoints

CALIBRATION_BATCHES = 8
BREVITAS_KNOBS = ("w_bits", "a_bits", "first_last_bits")
log = logging.getLogger("brevitas_qat")


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[quote_numeric_choice(o) for o in overrides])


def brevitas_run(cfg: DictConfig, command: str, run_dir: Path) -> dict[str, object]:
    """Float model, Brevitas copy, calibration, QAT, evaluation; returns the appended row."""
    if cfg.task.name != "classification":
        raise ConfigError("task.name: the Brevitas baseline runs the classification task only")
    setup = prepare_run(cfg, run_dir)  # the checks and set-up of gdrq-run's runs
    # the bits are used, the method's own knobs not. Brevitas has no reshape stage, so under
    # trainer.equal_budget it fine-tunes as gdrq-run's methods without one do: all in QAT
    spec, task = replace(setup.spec, method="minmax"), setup.task
    checkpoints = RunCheckpoints(
        Path(cfg.checkpoint_dir).expanduser() / f"brevitas-{run_key(cfg)}",
        resume=cfg.trainer.resume,
    )
    device = torch.device("cpu")
    run = Run(cfg, spec, task, run_dir, RunLogger(), checkpoints, device, git_sha())
    model, fp_source = stage_fp(run, setup.model)
    run.evaluate(model, "fp")
    stage_float_control(run, model)  # min-max's: the same QAT-only budget, shared from its cache
    seed_stage(cfg.seed, "calibrate")
    batches = [images for images, _ in islice(task.train_loader(), CALIBRATION_BATCHES)]
    qmodel = brevitas_copy(model, spec.w_bits, spec.a_bits, batches[0])
    calibrate(qmodel, batches)
    run.train(qmodel, "qat")
    run.evaluate(qmodel, "quant", final=True)  # its predictions.json, for the bench's tests
    for prefix in ("", VALIDATION):  # drop = fp - quant; folded shown empty below, val_ not
        if f"{prefix}quant" in run.metrics:
            run.metrics[f"{prefix}folded"] = run.metrics[f"{prefix}quant"]
    row = result_row(run, fp_source, {}, None, command)
    # of the spec only the bits (and the edge layers' bits) act on Brevitas' quantizers
    row.update({column: "" for column in SPEC_COLUMNS if column not in BREVITAS_KNOBS})
    row.update(method="brevitas", groups="per_channel", folded="")
    row.update(spec_hash=spec_hash(cfg, spec, outside="brevitas"))
    append_row(row_table(cfg, task.name), row)
    checkpoints.finish()
    log.info(
        "brevitas W%dA%d: fp %.2f, quant %.2f", spec.w_bits, spec.a_bits, row["fp"], row["quant"]
    )
    return row


def main(argv: list[str] | None = None) -> None:
    overrides = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    command = shlex.join(["python", "bench/brevitas_qat.py", *overrides])
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    try:
        cfg = compose_config(overrides)
        run_dir = Path("outputs") / "brevitas" / stamp
        run_dir.mkdir(parents=True, exist_ok=True)
        brevitas_run(cfg, command, run_dir)
    except (GdrqError, HydraException) as error:
        print(f"brevitas_qat: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
