"""Where a number came from: code version, library versions, device."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch
import torchvision

from gdrq_bench import __version__

RESULTS_PATHSPECS = (":!results", ":!bench/results", ":!bench/RESULTS*.md")


def git_sha() -> str:
    """The checkout's commit, '-dirty' if it has uncommitted changes outside the results,
    'unknown' outside git."""
    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short=12", "HEAD")
        # results tables change with every run: new rows are not a code change
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *RESULTS_PATHSPECS)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def code_version_since(started: str) -> str:
    """The code version of a run that started at `started` (git_sha() then): the same, or
    marked -dirty when the checkout changed before the run finished (a commit, a checkout or
    an edit), since the code that ran is then not one commit's."""
    if started.endswith("-dirty") or started == "unknown" or git_sha() == started:
        return started
    return f"{started}-dirty"


def versions() -> str:
    return (
        f"python={platform.python_version()} torch={torch.__version__} "
        f"torchvision={torchvision.__version__} gdrq_bench={__version__}"
    )


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
