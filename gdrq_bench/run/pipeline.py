"""One run of gdrq-run, stage by stage: fp -> float control -> reshape -> qat -> fold -> eval
-> report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gdrq_bench.quant import FLOAT_BITS
from gdrq_bench.reporting import provenance
from gdrq_bench.reporting.run_logger import RunLogger, start_logger
from gdrq_bench.run.context import Run
from gdrq_bench.run.control import stage_float_control
from gdrq_bench.run.float_scores import score_float_model
from gdrq_bench.run.fp import stage_fp
from gdrq_bench.run.keys import run_key
from gdrq_bench.run.outcome import QuantizedResult
from gdrq_bench.run.report import stage_report
from gdrq_bench.run.setup import RunSetup, prepare_run
from gdrq_bench.run.stages import quantized_stages
from gdrq_bench.training import distributed
from gdrq_bench.training.checkpoint import RunCheckpoints


def run_pipeline(cfg: DictConfig, command: str, run_dir: Path) -> dict[str, Any] | None:
    """Validate everything that can be checked cheaply, then run the stages in order; the
    results row (None on the processes of a distributed run other than rank 0)."""
    setup = prepare_run(cfg, run_dir)
    distributed.start()
    try:
        return _run_stages(setup, command, run_dir)
    finally:
        distributed.stop()


def _run_stages(setup: RunSetup, command: str, run_dir: Path) -> dict[str, Any] | None:
    cfg, spec = setup.cfg, setup.spec
    main = distributed.is_main()
    if distributed.world_size() > 1:
        command = f"torchrun --nproc-per-node={distributed.world_size()} --no-python {command}"
    checkpoints = RunCheckpoints(
        Path(cfg.checkpoint_dir).expanduser() / run_key(cfg), cfg.trainer.resume, writer=main
    )
    device = distributed.device(cfg.trainer.device)
    logger = start_logger(cfg, run_dir) if main else RunLogger()
    run = Run(cfg, spec, setup.task, run_dir, logger, checkpoints, device, provenance.git_sha())
    row, result = None, QuantizedResult()
    try:
        float_model = stage_fp(run, setup.model.to(device))
        float_baseline = spec.w_bits == spec.a_bits == FLOAT_BITS  # nothing to quantize
        score_float_model(run, float_model, final=float_baseline)
        distributed.barrier()
        if not float_baseline:
            stage_float_control(run, float_model)
            result = quantized_stages(run, float_model.model)
        if main:
            row = stage_report(run, float_model, result, command)
            checkpoints.finish()
    finally:
        run.logger.finish(row)
    if result.failure is not None:  # the row is written, marked failed; the run still fails
        raise result.failure
    return row
