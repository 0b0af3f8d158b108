"""Sweep presets: every grid of every preset composes, and the default grid is the issue's."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gdrq_bench.cli.sweep import SWEEP_DIR, grid_commands, load_preset
from gdrq_bench.config import CONFIG_DIR, quote_numeric_choice
from gdrq_bench.config.errors import SweepError

PRESETS = sorted(path.stem for path in SWEEP_DIR.glob("*.yaml"))


def _grids(preset_name: str) -> tuple[list[str], list[list[list[str]]]]:
    """A preset's common overrides, and each grid's axes as lists of key=value overrides."""
    preset = load_preset(preset_name)
    common = [str(override) for override in preset.get("overrides", [])]
    return common, [
        [[f"{key}={value}" for value in str(values).split(",")] for key, values in grid.items()]
        for grid in preset.grids
    ]


def _runs(preset_name: str) -> list[list[str]]:
    """Every run of a preset as its list of overrides."""
    common, grids = _grids(preset_name)
    return [common + list(choice) for axes in grids for choice in itertools.product(*axes)]


def _covering_runs(preset_name: str) -> list[list[str]]:
    """Runs of each grid that hold every value of every axis at least once (run i takes
    value i of each axis, cycling): as many as the grid's longest axis."""
    common, grids = _grids(preset_name)
    return [
        common + [axis[index % len(axis)] for axis in axes]
        for axes in grids
        for index in range(max(map(len, axes)))
    ]


def test_presets_include_the_issue_grids() -> None:
    assert {"default", "imagenet_paper", "coco_retinanet_w4a4", "voc_deeplabv3_w4a4"} <= set(
        PRESETS
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_every_value_of_every_preset_composes(preset: str) -> None:
    """Composing fails on a value (an option or key that does not exist), not on a
    combination of valid ones, so each value is composed once within its grid and with the
    preset's overrides, not each run of the product (bench_fashion alone has 200 runs)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for overrides in _covering_runs(preset):
            quoted = [quote_numeric_choice(override) for override in overrides]
            cfg = compose("config", overrides=[*quoted, "dataset.root=/data"])
            chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")]
            assert cfg.method.name == (chosen[0] if chosen else "gdrq")


def test_default_grid_is_gdrq_groupings_and_three_baselines() -> None:
    runs = {tuple(sorted(run)) for run in _runs("default")}
    assert len(runs) == 18
    for bits in ("8", "4", "w2a4"):
        for grouping in ("none", "g4", "per_channel"):
            assert tuple(sorted([f"bits={bits}", f"grouping={grouping}", "method=gdrq"])) in runs
        for method in ("lsq", "pact", "minmax"):
            assert tuple(sorted([f"bits={bits}", f"method={method}"])) in runs


def test_jobs_choose_joblib_and_split_the_threads() -> None:
    [first, _] = grid_commands(load_preset("default"), ["seed=1"], jobs=2)
    assert first[1] == "--multirun"
    assert "hydra/launcher=joblib" in first and "hydra.launcher.n_jobs=2" in first
    assert first[-1] == "seed=1"
    [mine, _] = grid_commands(load_preset("default"), ["trainer.threads=4"], jobs=2)
    assert [arg for arg in mine if arg.startswith("trainer.threads=")] == ["trainer.threads=4"]
    [slurm, _] = grid_commands(load_preset("default"), ["hydra/launcher=slurm"], jobs=2)
    assert [arg for arg in slurm if arg.startswith("hydra")] == ["hydra/launcher=slurm"]


def test_unknown_preset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match=r"one of .*'default'"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grids: []\n")
    with pytest.raises(SweepError, match="non-empty list"):
        load_preset(str(bad))


def test_slurm_launcher_preset_runs_one_task_per_gpu() -> None:
    overrides = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node) == (4, 4)
    assert launcher.max_num_timeout > 0  # requeued jobs resume with trainer.resume=true
