"""End to end: gdrq-run itself, on the embedded digits data, into temporary results tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import error_lines, gdrq_run, read_rows

from gdrq_bench.reporting.results import COLUMNS


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per module: digits are written once, the smoke float model trained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_smoke_run_writes_one_complete_row(tmp_path: Path, cache_dir: Path) -> None:
    result = gdrq_run(tmp_path, cache_dir, "logger=none", "seed=3")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_rows(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert list(row) == COLUMNS
    assert (row["task"], row["dataset"], row["model"], row["method"]) == (
        "classification",
        "digits",
        "resnet20",
        "gdrq",
    )
    assert (row["w_bits"], row["a_bits"], row["groups"], row["seed"]) == ("4", "4", "4", "3")
    assert row["metric"] == "top1"
    scores = {name: float(row[name]) for name in ("fp", "quant", "folded")}
    assert all(0.0 <= value <= 100.0 for value in scores.values())
    assert float(row["drop"]) == pytest.approx(scores["fp"] - scores["folded"], abs=1e-3)
    assert float(row["fold_err"]) <= 1e-6
    assert float(row["kurtosis_after"]) < float(row["kurtosis_before"])
    assert 0 < float(row["ql_after"]) < 1 and 0 < float(row["ql_before"]) < 1
    assert row["command"] == (
        f"gdrq-run trainer=smoke results_dir={tmp_path / 'results'} logger=none seed=3"
    )
    assert row["fp_source"] == "trained"
    table = tmp_path / "results" / "debug" / "classification.csv"  # a smoke run: not published
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"gdrq-run: row appended to {table}; run directory {row['run_dir']}"
    run_dir = Path(row["run_dir"])
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "gdrq_run.log").is_file()
    assert row["finetune_epochs"] == "2"  # smoke: reshape 1 + qat 1
    assert row["finetune_batches"] == "2"  # smoke: max_train_batches=2 caps every epoch
    # per-stage probes: the metric after every stage, and where each clip cuts
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics) == ["fp", "fp_ft", "reshape", "round", "quant", "folded"]
    assert all({"top1", "nll"} <= set(values) for values in metrics.values())
    assert "top1 by model: fp " in (run_dir / "gdrq_run.log").read_text()
    stats = json.loads((run_dir / "layer_stats.json").read_text())
    assert list(stats) == ["before", "after", "final"]
    for phase in ("after", "final"):
        middle = stats[phase]["layer2.0.conv1"]
        assert {"clipped", "clip_l2", "act_clipped", "act_clipped_energy"} <= set(middle)
        assert all(0 <= middle[key] < 1 for key in ("clipped", "clip_l2", "act_clipped"))
    assert 0 < stats["final"]["layer2.0.conv1"]["ql2_quantizer"] < 1
    timings = json.loads((run_dir / "timings.json").read_text())  # training seconds per stage
    assert list(timings["stage_train_s"]) == ["fp", "reshape", "qat"]
    assert sum(timings["stage_train_s"].values()) == pytest.approx(timings["train_s"])
    assert float(row["train_s"]) == round(timings["train_s"], 1)
    # the equal-budget float control: the float model fine-tuned by the same stages
    assert list(timings["float_control_train_s"]) == ["fp_ft_reshape", "fp_ft_qat"]
    assert float(row["fp_ft"]) == round(metrics["fp_ft"]["top1"], 4)
    assert float(row["drop_ft"]) == pytest.approx(float(row["fp_ft"]) - scores["folded"], abs=1e-3)


@pytest.mark.slow
def test_second_run_reuses_the_cached_float_model(tmp_path: Path, cache_dir: Path) -> None:
    first = gdrq_run(tmp_path, cache_dir, "logger=none", "seed=5", "bits=8")
    second = gdrq_run(tmp_path, cache_dir, "logger=none", "seed=5", "bits=8")
    other_seed = gdrq_run(tmp_path, cache_dir, "logger=none", "seed=6", "fp_seed=5", "bits=8")
    assert first.returncode == second.returncode == other_seed.returncode == 0, (
        second.stderr[-2000:] + other_seed.stderr[-2000:]
    )
    rows = read_rows(tmp_path)
    assert [row["fp_source"] for row in rows] == ["trained", "cache", "cache"]
    for metric in ("fp", "quant", "folded", "fold_err", "kurtosis_after"):
        assert rows[0][metric] == rows[1][metric], metric
    # fp_seed keeps seed 5's float model while the quantization stages draw from seed 6
    assert rows[2]["seed"] == "6" and rows[2]["fp"] == rows[0]["fp"]


def test_a_float_run_scores_its_float_model_alone(tmp_path: Path, cache_dir: Path) -> None:
    """bits=32 quantizes nothing: metrics.json holds the float model's scores alone, and the
    row's quant and folded columns carry the deployed (float) model's score."""
    result = gdrq_run(tmp_path, cache_dir, "logger=none", "bits=32")
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"fp"}
    assert row["fp"] == row["quant"] == row["folded"] == str(round(metrics["fp"]["top1"], 4))
    assert (row["drop"], row["fold_err"], row["fp_ft"]) == ("0.0", "", "")


def test_missing_dataset_root_fails_with_one_line_and_no_row(
    tmp_path: Path, cache_dir: Path
) -> None:
    missing = tmp_path / "no-such-imagenet"
    result = gdrq_run(tmp_path, cache_dir, "dataset=imagefolder", f"dataset.root={missing}")
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1 and str(missing) in lines[0] and "train" in lines[0]
    assert read_rows(tmp_path) == []


def test_wrong_layout_fails_naming_the_path(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "flat"
    (root / "train" / "cat").mkdir(parents=True)
    result = gdrq_run(tmp_path, cache_dir, "dataset=imagefolder", f"dataset.root={root}")
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1 and str(root) in lines[0]
    assert read_rows(tmp_path) == []


@pytest.mark.slow
def test_same_seed_trained_twice_gives_the_same_row(tmp_path: Path) -> None:
    rows = []
    for attempt in ("a", "b"):
        workdir = tmp_path / attempt
        result = gdrq_run(workdir, tmp_path / f"cache-{attempt}", "logger=none", "seed=7")
        assert result.returncode == 0, result.stderr[-2000:]
        rows += read_rows(workdir)
    assert [row["fp_source"] for row in rows] == ["trained", "trained"]
    for metric in ("fp", "quant", "folded", "fold_err", "kurtosis_before", "ql_after"):
        assert rows[0][metric] == rows[1][metric], metric
    assert rows[0]["seed"] == "7"
    assert all(f"{library}=" in rows[0]["versions"] for library in ("torch", "torchvision"))


@pytest.mark.slow
def test_the_float_control_changes_no_number_of_the_quantized_run(
    tmp_path: Path, cache_dir: Path
) -> None:
    """With the control off the row's numbers are the same (its random draws are put back);
    another method of the same stage split reuses the cached control."""
    off = gdrq_run(tmp_path, cache_dir, "logger=none", "seed=7", "trainer.float_control=false")
    on = gdrq_run(tmp_path, cache_dir, "logger=none", "seed=7")
    shared = gdrq_run(tmp_path, cache_dir, "logger=none", "seed=7", "method=scale_clip_only")
    assert off.returncode == on.returncode == shared.returncode == 0, on.stderr[-2000:]
    rows = read_rows(tmp_path)
    same = ("fp", "quant", "folded", "nll", "kurtosis_after", "ql_after", "spec_hash")
    assert [rows[0][key] for key in same] == [rows[1][key] for key in same]
    assert (rows[0]["fp_ft"], rows[0]["drop_ft"]) == ("", "")
    assert rows[1]["fp_ft"] != "" and rows[2]["fp_ft"] == rows[1]["fp_ft"]
    timings = json.loads((Path(rows[2]["run_dir"]) / "timings.json").read_text())
    assert timings["float_control_train_s"] == {}  # scored from the cache
