"""The equal-budget float control (`trainer.float_control`, default on): the float model
fine-tuned exactly as the run's quantized model is (the same stages, epochs, batches, learning
rates and seed) with no quantizer, and scored as `fp_ft`. The row's `drop_ft = fp_ft - folded`
is then the quantization's loss alone, and `fp_ft - fp` what the fine-tuning itself does (on
a float model that is not converged, fine-tuning alone raises the score).

Its score is cached per float model, recipe, seed and evaluation set (run/keys.py:
float_control_key), so the runs of a grid that share them compute it once. It draws from the
random-number generators between the float and the quantized stages, so their states are put
back afterwards: the quantized stages see what they would without it.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gdrq_bench.run.budget import finetune_stages, is_ptq
from gdrq_bench.run.context import Run
from gdrq_bench.run.keys import float_control_key
from gdrq_bench.run.outcome import FloatModel
from gdrq_bench.run.shared_cache import cache_lock
from gdrq_bench.tasks.common import write_json
from gdrq_bench.training import distributed
from gdrq_bench.training.checkpoint import capture_rng, restore_rng

log = logging.getLogger(__name__)

CONTROL = "fp_ft"  # its name in metrics.json, the row and the checkpoints


def stage_float_control(run: Run, float_model: FloatModel) -> None:
    """Score the equal-budget float control of the float model into run.metrics["fp_ft"]
    (from the cache when it is there), unless trainer.float_control is off or nothing is
    fine-tuned (post-training quantization)."""
    if not run.cfg.trainer.float_control or is_ptq(run.cfg):
        return
    key = float_control_key(run.cfg, run.spec, float_model.weights_hash)
    cache = Path(run.cfg.cache_dir).expanduser() / CONTROL / f"{key}.json"
    with cache_lock(cache):
        if cache.is_file():
            for name, metrics in json.loads(cache.read_text()).items():
                run.record_scores(name, metrics, source=str(cache))
            return
        with _random_state_kept():
            control = copy.deepcopy(float_model.model)
            for stage in finetune_stages(run.spec):
                run.train(control, stage, name=f"{CONTROL}_{stage}")
            run.evaluate(control, CONTROL)
        if distributed.is_main():  # its scores, on the held-out images too (dataset.holdout)
            write_json(cache, run.scores_of(CONTROL))


@contextmanager
def _random_state_kept() -> Iterator[None]:
    """Every global random-number state as it was before the block."""
    state = capture_rng(None)
    try:
        yield
    finally:
        restore_rng(state, None)
