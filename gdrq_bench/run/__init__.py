"""One run, stage by stage: fp -> float control -> reshape -> qat -> fold -> eval -> export ->
report.

setup.py checks the config and builds what a run needs (spec.py: the QuantSpec; task.py: the
task); context.py holds what every stage reads and what its evaluations and training measure;
fp.py, control.py, stages.py, export.py and report.py are the stages, outcome.py the typed
results they hand on; pipeline.py runs them in order; keys.py and budget.py hold the cache
keys and the epochs.
"""

from gdrq_bench.run.pipeline import run_pipeline
from gdrq_bench.run.report import row_table
from gdrq_bench.run.setup import RunSetup, prepare_run

__all__ = ["RunSetup", "prepare_run", "row_table", "run_pipeline"]
