"""Generated data sets are written once into the cache, atomically.

A tree is built in a temporary sibling directory and renamed into place, so a killed run never
leaves a half tree (at most a hidden .<name>-* directory), and two runs racing to build the same
tree both end with the complete one. The marker file is written last; a tree without it is
refused rather than silently used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from gdrq_bench.config.errors import DataError


def write_once(tree: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """`tree`, built by `write(directory)` (which must write `marker` last) if missing."""
    if not tree.exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}-", dir=tree.parent))
        try:
            write(tmp)
            try:
                os.replace(tmp, tree)
            except OSError:
                if not tree.exists():  # not a lost race with a concurrent run: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not (tree / marker).is_file():
        raise DataError(f"{tree} exists but is incomplete (no {marker}); delete it to rebuild")
    return tree
