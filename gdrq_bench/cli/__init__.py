"""The command-line entry points: gdrq-run (run.py, exported here as `main` for its console
script) and gdrq-sweep (sweep.py); gdrq-board lives with the leaderboard (board/)."""

from gdrq_bench.cli.run import main

__all__ = ["main"]
