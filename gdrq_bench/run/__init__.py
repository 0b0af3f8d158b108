"""One run, stage by stage: fp -> reshape -> qat -> fold -> eval -> report.

setup.py checks the config and builds what a run needs (spec.py: the QuantSpec; task.py: the
task); context.py holds the run's state; fp.py, stages.py and report.py are the stages;
pipeline.py runs them in order; keys.py and budget.py hold the cache keys and the epochs.
What is exported here is what other runners (the bench's outside baselines) build on.
"""

from gdrq_bench.run.budget import seed_stage
from gdrq_bench.run.context import Run
from gdrq_bench.run.fp import stage_fp
from gdrq_bench.run.keys import run_key
from gdrq_bench.run.pipeline import run_pipeline
from gdrq_bench.run.report import result_row, row_table
from gdrq_bench.run.setup import RunSetup, prepare_run

__all__ = [
    "Run",
    "RunSetup",
    "prepare_run",
    "result_row",
    "row_table",
    "run_key",
    "run_pipeline",
    "seed_stage",
    "stage_fp",
]
