"""The float model's scores (`fp`, and `val_fp` on held-out images), cached per float model
and evaluation set (run/keys.py: float_scores_key): the runs of a grid that share a float model
score it once. Its per-image predictions are cached with them and written to each run
directory as if computed there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gdrq_bench.run.context import Run
from gdrq_bench.run.keys import float_scores_key
from gdrq_bench.run.outcome import FloatModel
from gdrq_bench.run.shared_cache import cache_lock
from gdrq_bench.tasks.common import write_json
from gdrq_bench.training import distributed

FLOAT = "fp"  # its name in metrics.json and the row
CACHE = "fp_scores"  # the cache folder's name
SCORES, PREDICTIONS = "scores.json", "predictions.json"  # a cache entry's files


def score_float_model(run: Run, float_model: FloatModel, final: bool) -> None:
    """Score the float model into run.metrics["fp"] (and "val_fp"), from the cache when it is
    there; `final`: the run's last evaluation (a float baseline), whose predictions are
    predictions.json."""
    key = float_scores_key(run.cfg, float_model.weights_hash)
    entry = Path(run.cfg.cache_dir).expanduser() / CACHE / key
    predictions = run.run_dir / (PREDICTIONS if final else f"predictions_{FLOAT}.json")
    with cache_lock(entry / SCORES):
        if (entry / SCORES).is_file():
            saved = json.loads((entry / SCORES).read_text())
            for name, metrics in saved["metrics"].items():
                run.record_scores(name, metrics, source=str(entry))
            run.eval_samples, run.holdout_samples = saved["eval_samples"], saved["holdout_samples"]
            if distributed.is_main() and (entry / PREDICTIONS).is_file():
                shutil.copyfile(entry / PREDICTIONS, predictions)
            return
        run.evaluate(float_model.model, FLOAT, final=final)
        if distributed.is_main():
            if predictions.is_file():  # tasks that write per-image predictions
                shutil.copyfile(predictions, entry / PREDICTIONS)
            saved = {
                "metrics": run.scores_of(FLOAT),
                "eval_samples": run.eval_samples,
                "holdout_samples": run.holdout_samples,
            }
            write_json(entry / SCORES, saved)  # last: an entry without it is unfinished
