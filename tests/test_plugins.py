"""Extension seams: a module named in `plugins` adds an export format from outside the
package, and gdrq-run writes it like its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_runner import assert_failed_cleanly, error_lines, gdrq_run_with_modules, read_rows

NPZ_EXPORT = '''
"""An export format from outside gdrq_bench: the folded model's integer weights as .npz."""

import numpy as np

from gdrq_bench.run.export import ExportFormat, register_export


def write_npz(job):
    weights = {
        name: tensor.numpy()
        for name, tensor in job.folded.state_dict().items()
        if name.endswith("weight_int")
    }
    np.savez(job.run.run_dir / "weights.npz", **weights)
    job.report["npz"] = {"layers": len(weights)}


register_export("npz", ExportFormat(write_npz))
'''


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return gdrq_run_with_modules(tmp_path, {"npz_export.py": NPZ_EXPORT}, *overrides)


@pytest.mark.slow
def test_an_export_format_added_by_a_plugin_is_written_beside_the_own(tmp_path: Path) -> None:
    result = _run(tmp_path, "plugins=[npz_export]", "export=exact+npz")
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    assert float(row["exact_diff"]) == 0.0  # the own format, in the same run
    run_dir = Path(row["run_dir"])
    weights = np.load(run_dir / "weights.npz")
    assert len(weights.files) == 22  # every folded layer: 21 convs (2 shortcuts) and fc
    assert weights["layer2.0.conv1.weight_int"].shape == (32, 16, 3, 3)
    report = json.loads((run_dir / "export.json").read_text())
    assert report["npz"] == {"layers": 22} and report["exact"]["max_abs_diff"] == 0.0


def test_an_unknown_format_or_plugin_is_named_before_training(tmp_path: Path) -> None:
    result = _run(tmp_path, "export=npz")  # the plugin not loaded: npz is not a format
    assert_failed_cleanly(result, tmp_path, "classification", "export")
    (line,) = error_lines(result)
    assert line.endswith("export=npz: unknown; valid: none, exact, qdq, both")
    result = _run(tmp_path, "plugins=[no_such_module]")
    assert_failed_cleanly(result, tmp_path, "classification", "plugins")
    assert "cannot import 'no_such_module'" in error_lines(result)[0]
