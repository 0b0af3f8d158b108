"""The benchmark scripts' own logic: the Brevitas grid, the accuracy tables, the Brevitas copy."""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import accuracy
import export_cost
import intervals
import step_cost
from cli_runner import forked_run, gdrq_command, gdrq_env


def test_a_methods_knobs_vary_on_one_float_model() -> None:
    """A grid over a method's knob (method.act_stat) needs one float model per network, not
    one per value: the knob acts after the float stage."""
    name = "bench_fashion_choices"
    floats = accuracy.float_commands(name, jobs=2)
    assert len(floats) == 2 and not any("method.act_stat" in arg for c in floats for arg in c)
    grids = accuracy.load_preset(name).grids
    runs = [c for grid in grids for c in accuracy.method_commands(name, 2, grid)]
    assert {accuracy.float_key(c) for c in runs} == {accuracy.float_key(c) for c in floats}


def test_configurations_of_one_method_are_named_by_the_knobs_that_differ(tmp_path: Path) -> None:
    """Two gdrq configurations whose act_stat differs are two lines named by that knob; two
    whose knob columns agree (a recipe outside them differs) are named by their spec hashes."""
    results = _rows(tmp_path)
    frame = pd.read_csv(results)
    frame["fp_hash"] = "float1"
    frame["spec_hash"] = frame.method + "-hash" + frame.w_bits.astype(str)
    frame["act_stat"] = "max_abs"
    frame.loc[3, ["spec_hash", "act_stat"]] = ["gdrq-mse", "mse"]  # gdrq W4A4 seed 2
    frame.to_csv(results, index=False)
    methods = [line.split(" | ")[1] for line in _table_lines(results) if line.startswith("| W4A4")]
    assert methods[:2] == ["gdrq act_stat=max_abs", "gdrq act_stat=mse"]
    frame["act_stat"] = "max_abs"
    frame.to_csv(results, index=False)
    methods = [line.split(" | ")[1] for line in _table_lines(results) if line.startswith("| W4A4")]
    assert methods[:2] == ["gdrq (spec gdrq-has)", "gdrq (spec gdrq-mse)"]


def test_float_and_brevitas_runs_follow_the_preset_grids() -> None:
    floats = accuracy.float_commands("bench_fashion", jobs=2)
    assert [c[-2:] for c in floats] == [
        ["model=resnet20", "trainer.fp.epochs=27"],  # the float recipe's epochs
        ["model=mobilenet_v2_cifar", "trainer.fp.epochs=27"],
    ]
    assert all("bits=32" in c and "dataset=fashion_mnist" in c for c in floats)
    assert not any(arg.startswith("trainer.eval_quant") for c in floats for arg in c)
    preset = accuracy.load_preset("bench_fashion")
    grids, twins = preset.grids, preset.brevitas_grids
    commands = [c for i in twins for c in accuracy.brevitas_commands("bench_fashion", 2, grids[i])]
    methods = [c for grid in grids for c in accuracy.method_commands("bench_fashion", 2, grid)]
    # every run (each method, each Brevitas twin, the longer budget's) needs one of the two
    # float models: trainer.finetune_batches acts after the float stage
    float_keys = {accuracy.float_key(c) for c in floats}
    assert {accuracy.float_key(c) for c in commands + methods} == float_keys
    assert len(commands) == 2 * 4 * 3  # Brevitas: both networks, every width, seeds 0-2
    runs = sorted(
        tuple(arg for arg in c if arg.startswith(("model=", "bits=", "seed="))) for c in commands
    )
    expected = [
        (f"model={model}", f"bits={bits}", *([f"seed={seed}"] if seed else []))
        for model in ("resnet20", "mobilenet_v2_cifar")
        for bits in ("8", "4", "3", "w2a4")
        for seed in (0, 1, 2)
    ]
    assert runs == sorted(expected)
    # every method at every width with seeds 0-2 (DoReFa seed 0 only), on both networks
    axes = ("model=", "method=", "bits=")
    named = {
        (
            *(arg.split("=", 1)[1] for arg in c if arg.startswith(axes)),
            next((arg for arg in c if arg.startswith("seed=")), "seed=0"),
        )
        for c in methods
        if not any(arg.startswith("trainer.finetune_batches=") for arg in c)
    }
    assert len(named) == 2 * 4 * (6 * 3 + 1)
    assert ("mobilenet_v2_cifar", "dorefa", "w2a4", "seed=0") in named
    assert ("mobilenet_v2_cifar", "dorefa", "w2a4", "seed=1") not in named
    longer = [c for c in methods if "trainer.finetune_batches=150" in c]
    assert len(longer) == 2 * 3 * 2 * 2  # networks x (gdrq, lsq, groups_only) x W4A4, W3A3 x 2
    first_grid = [
        c for grid in grids[:2] for c in accuracy.brevitas_commands("bench_fashion", 2, grid)
    ]
    assert not any(arg.startswith("seed=") for c in first_grid for arg in c)  # seed 0 first
    for command in commands:
        assert command[0].endswith("gdrq-run")
        assert "fp_seed=0" in command and "results_dir=bench/results/fashion" in command
        assert [arg for arg in command if arg.startswith("method=")] == ["method=brevitas"]
        assert "trainer.threads=1" in command and "dataset.holdout=5000" in command
    # a killed bench run continues from its last epoch; its row's command names it without
    assert all("trainer.resume=true" in c for c in commands + methods + floats)
    assert all("resume" not in accuracy.recorded(c) for c in commands + methods)
    assert accuracy.recorded(commands[0]).startswith("gdrq-run dataset=")
    assert accuracy.results_dir_of("bench_fashion") == Path("bench/results/fashion")


def _predictions(run_dir: Path, correct: np.ndarray) -> str:
    run_dir.mkdir(parents=True)
    target = np.arange(len(correct)) % 10
    predicted = np.where(correct, target, (target + 1) % 10)
    written = {"target": target.tolist(), "predicted": predicted.tolist()}
    (run_dir / "predictions.json").write_text(json.dumps(written))
    return str(run_dir)


def _rows(tmp_path: Path, runs: list[tuple] | None = None) -> Path:
    """A results table of 200 test images, by default: gdrq at W4A4 with three seeds (and a
    stale repeat of seed 0), minmax at W4A4 (one seed, 20 images worse), Brevitas at W4A4 (no
    folded model), and the float model. `runs`: (method, bits, seed, quant, folded, correct)."""
    rng = np.random.default_rng(0)
    base = rng.random(200) < 0.9
    worse = base.copy()
    worse[np.flatnonzero(base)[:20]] = False
    runs = runs or [
        ("gdrq", 4, 0, 50.0, 50.0, base),  # stale: replaced by the next seed-0 row
        ("gdrq", 4, 0, 98.0, 97.5, base),
        ("gdrq", 4, 1, 97.0, 96.5, base),
        ("gdrq", 4, 2, 96.0, 95.0, base),
        ("minmax", 4, 0, 90.0, 90.0, worse),
        ("brevitas", 4, 0, 98.5, None, base),
        ("gdrq", 32, 0, 99.0, 99.0, base),
    ]
    frame = pd.DataFrame(
        [
            {
                "dataset": "fashion_mnist",
                "model": "resnet20",
                "method": method,
                "w_bits": bits,
                "a_bits": bits,
                "seed": seed,
                "fp": 99.0,
                "quant": quant,
                "folded": folded,
                "nll": 0.25,
                "command": f"gdrq-run method={method} bits={bits} seed={seed} trainer.resume=true",
                "git_sha": "abc",
                "train_s": 10.0 + index**2,
                "run_id": f"run{index}",
                "run_dir": _predictions(tmp_path / f"run{index}", correct),
            }
            for index, (method, bits, seed, quant, folded, correct) in enumerate(runs)
        ]
    )
    path = tmp_path / "classification.csv"
    frame.to_csv(path, index=False)
    return path


def test_model_table_keeps_the_latest_row_and_compares_with_gdrq(tmp_path: Path) -> None:
    results = _rows(tmp_path)
    accuracy.keep_correctness(results)
    rows = accuracy.latest_rows(results, "fashion_mnist")
    table = accuracy.model_table(rows, results).splitlines()
    cells = [line.split(" | ") for line in table[2:] if line.startswith("|")]
    assert [row[:2] for row in cells] == [
        ["| W4A4", "gdrq"],
        ["| W4A4", "minmax"],
        ["| W4A4", "brevitas"],
    ]
    folded = [97.5, 96.5, 95.0]
    assert cells[0][2] == f"{statistics.mean(folded):.2f} ± {statistics.stdev(folded):.2f} (3)"
    assert cells[2][2] == "98.50 (1)"  # Brevitas: its quantized model is the deployed one
    assert cells[0][7] == "14 |"  # gdrq's median training seconds (runs 1-3: 11, 14, 19)
    # minmax is right on 20 fewer of the 200 images: -10 points, beyond the noise (bold);
    # one seed and no other cell with several: the test images' noise only (‡)
    assert cells[1][6].startswith("**-10.00 [") and cells[1][6].endswith("**‡")
    assert cells[2][6] == "+0.00 [+0.00, +0.00]‡"
    assert cells[0][5] == "—"  # rows without the equal-budget float control: no drop_ft
    assert table[-1].startswith("‡ One seed") and "test images' noise only" in table[-1]
    assert "†" not in "\n".join(table)


def test_drop_ft_and_the_validation_table_come_from_their_columns(tmp_path: Path) -> None:
    """Rows with the float control and a held-out split: drop_ft = fp_ft - deployed in the
    test-split table, and a validation table of the held-out figures (Brevitas' from its
    quantized model)."""
    results = _rows(tmp_path)
    frame = pd.read_csv(results).assign(
        fp_ft=99.5, val_samples=5000, val_fp_ft=98.0, val_folded=[90, 96, 95, 94, 91, 97, 99]
    )
    frame.to_csv(results, index=False)
    rows = accuracy.latest_rows(results, "fashion_mnist")
    table = accuracy.model_table(rows, results).splitlines()
    gdrq = next(line for line in table if line.startswith("| W4A4 | gdrq"))
    folded = [97.5, 96.5, 95.0]
    assert (
        gdrq.split(" | ")[5]
        == f"{99.5 - statistics.mean(folded):.2f} ± {statistics.stdev(folded):.2f} (3)"
    )
    validation = accuracy.validation_table(rows[rows.bits != "W32A32"]).splitlines()
    assert validation[0].startswith("Validation split (5000 training images held out")
    assert validation[4:] == [
        "| W4A4 | gdrq | 95.00 ± 1.00 (3) | 3.00 ± 1.00 (3) |",
        "| W4A4 | minmax | 91.00 (1) | 7.00 (1) |",
        "| W4A4 | brevitas | 97.00 (1) | 1.00 (1) |",
    ]
    # a preset that chooses knobs prints the validation split's figures alone
    frame.assign(val_fp=98.5).to_csv(results, index=False)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        accuracy.table(results, "fashion_mnist", validation_only=True)
    printed = buffer.getvalue()
    assert "float validation top1 98.50 (`gdrq-run method=gdrq bits=32 seed=0`)" in printed
    assert "Validation split (5000" in printed and "vs GDRQ" not in printed
    assert "97.50" not in printed  # gdrq seed 0's test top1


def test_one_seed_cells_borrow_the_networks_pooled_seed_spread(tmp_path: Path) -> None:
    """lsq at W8A8 has one seed: it borrows the seed spread of the per-seed differences to GDRQ
    pooled over the network's cells with several seeds (lsq and pact at W4A4), marked † with
    a footnote naming them; minmax at W4A4 collapsed (below half the float's top1) and is left
    out of the pool, and said to be."""
    rng = np.random.default_rng(1)
    good = [rng.random(200) < p for p in (0.9, 0.88, 0.92)]
    shifted = [rng.random(200) < p for p in (0.95, 0.8, 0.9)]  # seeds apart by points
    chance = [rng.random(200) < 0.1 for _ in range(3)]
    runs = [("gdrq", 32, 0, 99.0, 99.0, good[0])]
    for seed in range(3):
        runs += [
            ("gdrq", 4, seed, 90.0, 90.0, good[seed]),
            ("lsq", 4, seed, 90.0, 90.0, shifted[seed]),
            ("pact", 4, seed, 90.0, 90.0, good[(seed + 1) % 3]),
            ("minmax", 4, seed, 10.0, 10.0, chance[seed]),
        ]
    runs += [("gdrq", 8, 0, 90.0, 90.0, good[0]), ("lsq", 8, 0, 90.0, 90.0, shifted[0])]
    results = _rows(tmp_path, runs)
    accuracy.keep_correctness(results)
    rows = accuracy.latest_rows(results, "fashion_mnist")
    table = accuracy.model_table(rows, results).splitlines()
    cells = [line.split(" | ") for line in table if line.startswith("| W")]
    versus = {(cell[0], cell[1]): cell[6] for cell in cells}
    assert versus[("| W8A8", "lsq")].endswith("†")
    assert not versus[("| W4A4", "lsq")].endswith(("†", "‡"))  # its own seeds
    note = table[-1]
    assert note.startswith("† One seed") and "(4 df): W4A4 lsq, pact;" in note
    assert note.endswith(
        "left out as collapsed (a mean top1 below half the float model's): W4A4 minmax."
    )
    # the borrowed spread widens the W8A8 interval over the test images' noise alone
    pooled, collapsed = accuracy.pooled_spread(rows[rows.bits != "W32A32"], results)
    assert pooled.cells == ("W4A4 lsq", "W4A4 pact") and collapsed == ["W4A4 minmax"]
    at_w8 = rows[rows.bits == "W8A8"]
    pair = [accuracy.correctness(results, at_w8[at_w8.method == m]) for m in ("gdrq", "lsq")]
    alone = intervals.compare(*pair, paired=True)
    borrowed = intervals.compare(*pair, paired=True, pooled=pooled)
    assert borrowed.high - borrowed.low > alone.high - alone.low
    assert f"[{borrowed.low:+.2f}, {borrowed.high:+.2f}]" in versus[("| W8A8", "lsq")]


def test_goals_are_met_where_the_interval_holds_zero_or_lies_below_it(tmp_path: Path) -> None:
    """A preset's goals under the table: lsq right on 20 more of 200 images at every seed beats
    GDRQ beyond the noise (not met), minmax 20 fewer and Brevitas equal meet theirs; a goal
    with no rows at a width says not run, counted apart; widths without rows get no column."""
    rng = np.random.default_rng(2)
    base = rng.random(200) < 0.85
    better, worse = base.copy(), base.copy()
    better[np.flatnonzero(~base)[:20]] = True
    worse[np.flatnonzero(base)[:20]] = False
    runs = [("gdrq", 32, 0, 99.0, 99.0, base)]
    for seed in range(3):
        runs += [("gdrq", 4, seed, 85.0, 85.0, base), ("lsq", 4, seed, 95.0, 95.0, better)]
    runs += [("minmax", 4, 0, 75.0, 75.0, worse), ("brevitas", 4, 0, 85.0, None, base)]
    _rows(tmp_path, runs)
    goals = {"lsq": ["W4A4"], "minmax": ["W4A4", "W8A8"], "brevitas": ["W4A4"], "pact": ["W4A4"]}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        accuracy.tables(tmp_path, "fashion_mnist", goals=goals)
    lines = buffer.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("GDRQ's goals"))
    table = lines[start + 2 :]
    assert table[0] == "| method minus GDRQ | W4A4 | met |"
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in table[2:6]}
    assert rows["lsq"][0].startswith("**not met** +10.00 [+") and rows["lsq"][1] == "0 of 1 |"
    # one seed: the seed spread pooled from lsq's three (†), as in the table above
    assert rows["minmax"][0].startswith("met -10.00 [") and rows["minmax"][0].endswith("]†")
    assert rows["brevitas"][0].startswith("met +0.00 [-") and rows["brevitas"][0].endswith("†")
    assert rows["pact"] == ["not run", "0 of 0, 1 not run |"]


def test_per_image_results_are_kept_beside_the_rows(tmp_path: Path) -> None:
    """The table's intervals read vectors kept under results/correct/, so they survive the run
    directories (not committed); a row whose vector was never kept reads as unknown."""
    results = _rows(tmp_path)
    accuracy.keep_correctness(results)
    rows = accuracy.latest_rows(results, "fashion_mnist")
    written = json.loads((tmp_path / "run4" / "predictions.json").read_text())
    expected = np.asarray(written["predicted"]) == np.asarray(written["target"])
    for run_dir in rows.run_dir:
        (Path(run_dir) / "predictions.json").unlink()
    kept = accuracy.correctness(results, rows[rows.method == "minmax"])
    assert kept.shape == (1, 200) and (kept[0] == expected).all()
    assert sorted(p.name for p in (tmp_path / "correct").iterdir()) == [
        f"run{i}.json"
        for i in range(1, 7)  # run0 is a stale row, replaced by run1
    ]
    (tmp_path / "correct" / "run2.json").unlink()
    assert accuracy.correctness(results, rows[rows.method == "gdrq"]) is None
    assert "n/a" in accuracy.model_table(rows, results).splitlines()[3]


def _command(method: str, seed: int, *more: str) -> list[str]:
    return [accuracy.GDRQ_RUN, f"method={method}", "bits=4", f"seed={seed}", *more]


def test_runs_that_have_a_row_are_not_run_again(tmp_path: Path) -> None:
    results = _rows(tmp_path)
    frame = pd.read_csv(results)
    frame["spec_hash"] = [accuracy.composed_spec_hash(c.split()) for c in frame.command]
    frame.loc[2, "command"] = "gdrq-run method=gdrq bits=4 seed=2"  # from before resume=
    frame.to_csv(results, index=False)
    assert accuracy.finished_runs(tmp_path) == {}  # nothing kept yet
    accuracy.keep_correctness(results)
    (tmp_path / "correct" / "run2.json").unlink()  # gdrq seed 1's vector was lost
    finished = accuracy.finished_runs(tmp_path)
    resume = "trainer.resume=true"
    assert not accuracy.is_finished(_command("gdrq", 1, resume), finished)
    # recorded without trainer.resume=: a row from before the bench resumed counts as well
    assert accuracy.is_finished(_command("gdrq", 2, resume), finished)
    assert accuracy.is_finished(_command("brevitas", 0, resume), finished)
    assert not accuracy.is_finished(_command("lsq", 0, resume), finished)  # no row
    assert not accuracy.is_finished(_command("gdrq", 2, resume, "model=resnet20"), finished)
    assert accuracy.finished_runs(tmp_path / "none") == {}
    # another task's table: no per-image results to keep, a row is enough
    detection = pd.read_csv(results).iloc[[1]].assign(task="detection", command="gdrq-run x=1")
    detection.to_csv(tmp_path / "detection.csv", index=False)
    assert "gdrq-run x=1" in accuracy.finished_runs(tmp_path)


def test_rows_run_at_another_thread_count_are_named_before_they_are_ignored(
    tmp_path: Path, capsys
) -> None:
    """A bench resumed with another --jobs gives its runs another trainer.threads, which no
    row has: the note names the rows' thread counts (none when one of them is this call's)."""
    results = _rows(tmp_path)
    frame = pd.read_csv(results)
    ours = accuracy.threads_per_job(1)
    frame["command"] = frame.command + f" trainer.threads={ours + 1}"
    frame.to_csv(results, index=False)
    assert accuracy.other_thread_counts(tmp_path, jobs=1) == [f"trainer.threads={ours + 1}"]
    accuracy.note_other_thread_counts(tmp_path, 1, "bench/x.py")
    note = capsys.readouterr().err
    assert note.startswith(f"bench/x.py: note: the rows in {tmp_path} ran at trainer.threads=")
    assert f"runs at trainer.threads={ours}," in note
    frame.loc[0, "command"] += f" trainer.threads={ours}"
    frame.to_csv(results, index=False)
    assert accuracy.other_thread_counts(tmp_path, jobs=1) == []
    assert accuracy.other_thread_counts(tmp_path / "none", jobs=1) == []
    accuracy.note_other_thread_counts(tmp_path, 1, "bench/x.py")
    assert capsys.readouterr().err == ""


def test_rows_from_before_spec_hash_finish_no_command(tmp_path: Path) -> None:
    """A table written before rows had a spec_hash (the column reads as all-empty floats):
    its runs are known by command, with no spec, so every command runs again, quietly."""
    results = _rows(tmp_path, [("gdrq", 4, 0, 98.0, 97.5, np.ones(200, dtype=bool))])
    accuracy.keep_correctness(results)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warns when "" fills a float column
        finished = accuracy.finished_runs(tmp_path)
    assert finished == {"gdrq-run seed=0": {""}}
    assert not accuracy.is_finished(_command("gdrq", 0, "trainer.resume=true"), finished)


def test_a_float_model_counts_as_cached_where_gdrq_run_caches_it(
    tmp_path: Path, monkeypatch
) -> None:
    """The float cache a bench run reads is the file gdrq-run writes, at the thread count the
    command sets (a float run whose model is cached and row kept is not run again)."""
    cache, threads = tmp_path / "cache", torch.get_num_threads()
    monkeypatch.setenv("GDRQ_CACHE", str(cache))
    command = gdrq_command(tmp_path, "logger=none", "bits=32", f"trainer.threads={threads + 1}")
    assert not accuracy.float_model_cached(command)
    result = forked_run(command, gdrq_env(cache))
    assert result.returncode == 0, result.stderr[-2000:]
    assert accuracy.float_model_cached(command)
    assert torch.get_num_threads() == threads  # left as it was
    assert not accuracy.float_model_cached([*command, "fp_seed=1"])  # another float model
    assert not accuracy.float_model_cached([*command[:-1], f"trainer.threads={threads}"])


def test_a_row_made_under_another_default_is_run_again(tmp_path: Path) -> None:
    """A command is finished only by a row of what it means now: a row recorded when
    act_stat's default was max_abs (its spec_hash is the pinned command's) does not finish
    the same command under today's default, and does finish the command that pins it."""
    command = _command("gdrq", 0, "trainer.resume=true")
    pinned = [*command, "method.act_stat=max_abs"]
    old_default = accuracy.composed_spec_hash(pinned)
    assert old_default != accuracy.composed_spec_hash(command)
    results = _rows(tmp_path, [("gdrq", 4, 0, 98.0, 97.5, np.ones(200, dtype=bool))])
    pd.read_csv(results).assign(spec_hash=old_default).to_csv(results, index=False)
    accuracy.keep_correctness(results)
    finished = accuracy.finished_runs(tmp_path)
    assert finished == {"gdrq-run seed=0": {old_default}}
    assert not accuracy.is_finished(command, finished)
    assert accuracy.is_finished(pinned, finished)


def test_detection_and_segmentation_tables_show_the_metric_and_both_drops(
    tmp_path: Path, capsys
) -> None:
    def row(method: str, bits: int, seed: int, folded: float, fp_ft: float) -> dict:
        return {
            "task": "detection",
            "dataset": "shapes",
            "model": "resnet18",
            "method": method,
            "w_bits": bits,
            "a_bits": bits,
            "seed": seed,
            "metric": "bbox_ap",
            "fp": 30.0,
            "quant": folded,
            "folded": folded,
            "fp_ft": fp_ft,
            "val_fp": 28.0,
            "val_folded": folded - 1,
            "val_fp_ft": fp_ft - 1,
            "finetune_epochs": 0 if bits == 32 else 6,
            "command": f"gdrq-run task=detection method={method} bits={bits} seed={seed}",
            "git_sha": "abc",
            "run_id": f"{method}{bits}{seed}",
            "spec_hash": f"{method}{bits}",
            "fp_hash": "float1",
        }

    rows = [
        row("gdrq", 32, 0, 30.0, float("nan")),
        row("gdrq", 4, 0, 32.0, 33.0),
        row("gdrq", 4, 1, 34.0, 34.0),
        row("minmax", 4, 0, 31.0, 33.0),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "detection.csv", index=False)
    accuracy.tables(tmp_path)
    printed = capsys.readouterr().out
    assert (
        "### detection, shapes, resnet18\n\nfloat bbox_ap 30.00, on the held-out scenes 28.00"
        in (printed)
    )
    assert "Fine-tuning budget: 6 epochs." in printed
    assert "| W4A4 | gdrq | 33.00 ± 1.41 (2) | -3.00 ± 1.41 (2) | 0.50 ± 0.71 (2) | " in printed
    assert "| W4A4 | minmax | 31.00 (1) | -1.00 (1) | 2.00 (1) | 30.00 (1) | 2.00 (1) |" in printed
    assert "[95% CI]" not in printed  # no per-image results: no interval


def _table_lines(results: Path) -> list[str]:
    """accuracy.table's output lines."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        accuracy.table(results, "fashion_mnist")
    return buffer.getvalue().splitlines()


def test_two_configurations_of_one_command_never_share_a_mean(tmp_path: Path) -> None:
    """The same command run at two spec versions (spec_hash) gives two lines; a longer
    fine-tuning budget gets a table of its own; Brevitas' hash is not min-max's."""
    results = _rows(tmp_path)
    frame = pd.read_csv(results)
    frame["spec_hash"] = frame.method + "-hash" + frame.w_bits.astype(str)
    frame["fp_hash"] = "float1"
    frame["finetune_epochs"] = [3, 3, 3, 3, 3, 3, 0]
    frame["finetune_batches"] = [30, 30, 30, 30, 30, 30, None]
    frame.loc[3, "spec_hash"] = "gdrq-newer-defaults"  # gdrq seed 2 at a later code version
    longer = frame.iloc[[1, 2]].assign(
        finetune_batches=150, spec_hash="gdrq-longer", run_id=["long1", "long2"], folded=99.0
    )
    pd.concat([frame, longer]).to_csv(results, index=False)
    lines = _table_lines(results)
    rows = [line for line in lines if line.startswith("| W4A4")]
    methods = [line.split(" | ")[1] for line in rows]
    assert methods == [
        "gdrq (spec gdrq-has)",  # gdrq-hash4, seeds 0 and 1
        "gdrq (spec gdrq-new)",  # seed 2, at the later version
        "minmax",
        "brevitas",
        "gdrq",
    ]
    assert rows[0].split(" | ")[2].endswith("(2)") and rows[1].split(" | ")[2].endswith("(1)")
    assert "Fine-tuning budget: 3 epochs of 30 batches." in lines
    assert "Fine-tuning budget: 3 epochs of 150 batches." in lines
    assert rows[4].split(" | ")[2] == "99.00 ± 0.00 (2)"  # the longer budget's own mean


def test_each_run_starts_once_its_float_model_is_built(tmp_path: Path, monkeypatch) -> None:
    """Two slots: float A (slow) holds one; float B, float C and B's run go through the other
    without waiting on A; A's run starts after float A; C's float fails, so C's run fails
    without starting."""
    monkeypatch.setattr(accuracy, "POLL_S", 0.05)
    log = tmp_path / "log"

    def job(name: str, seconds: float = 0.0, code: int = 0, **deps) -> accuracy.Job:
        script = (
            f"import time; time.sleep({seconds}); "
            f"open({str(log)!r}, 'a').write({name!r} + '\\n'); raise SystemExit({code})"
        )
        return accuracy.Job([sys.executable, "-c", script], **deps)

    jobs = [
        job("float A", 3.0, gives=("A",)),
        job("float B", gives=("B",)),
        job("float C", code=1, gives=("C",)),
        job("run A", needs=("A",)),
        job("run C", needs=("C",)),
        job("run B", needs=("B",)),
    ]
    failed = accuracy.run_jobs(jobs, slots=2)
    assert log.read_text().splitlines() == ["float B", "float C", "run B", "float A", "run A"]
    assert failed == [" ".join(jobs[i].command[1:]) for i in (2, 4)]


def test_tables_only_runs_the_last_command_and_says_so(tmp_path: Path, monkeypatch) -> None:
    import make_results

    monkeypatch.setattr(make_results, "OUT", tmp_path)
    marker = tmp_path / "ran"
    step = make_results.Step(
        "demo",
        "Demo table",
        "about",
        (
            ("python", "-c", f"open({str(marker)!r}, 'w')"),  # the runs: skipped
            ("python", "-c", "print('| a |')"),
        ),
    )
    make_results.run_step(step, tables_only=True)
    written = (tmp_path / "demo.md").read_text()
    assert not marker.exists()
    assert "| a |" in written and "the runs were not repeated" in written
    assert "open(" in written  # the commands that make the rows are still shown


def test_sections_of_steps_not_rerun_are_kept_from_the_committed_file(tmp_path: Path) -> None:
    import make_results

    results = tmp_path / "RESULTS.md"
    results.write_text("# t\n\nMachine: m\n\n## Cost\n\n| x |\n\n## Eval\n\ntext\n")
    assert make_results.committed_sections(results) == {
        "Cost": "## Cost\n\n| x |",
        "Eval": "## Eval\n\ntext",
    }
    assert make_results.committed_sections(tmp_path / "missing.md") == {}


def test_export_cost_times_the_four_variants_of_each_case() -> None:
    """A tiny case: four medians per row, and the table's speed-ups are their ratios."""
    rows = export_cost.measure("resnet18", 32, [1], [1], budget=0.01)
    (name, batch, threads, medians, repeats) = rows[0]
    assert (name, batch, threads, len(medians)) == ("resnet18", 1, 1, 4) and repeats >= 5
    line = export_cost.table(rows, 32).splitlines()[-1]
    assert line.startswith("| resnet18 32x32 b1 1 thread |")
    assert f"{medians[1] / medians[0]:.2f}x" in line


def test_step_cost_gives_each_variant_as_a_ratio_of_the_float_step() -> None:
    """A tiny case (Brevitas too where the bench extra is installed): the row's ratios are the
    variants' medians over the float model's."""
    result = step_cost.measure("resnet18", 32, 2, torch.device("cpu"), budget_s=0.01)
    expected = {"GDRQ", "GDRQ eager", *(["Brevitas"] if step_cost.HAS_BREVITAS else [])}
    assert set(result.train_ratios) == expected and result.repeats[0] >= step_cost.MIN_REPEATS
    assert all(
        ratio > 0 for ratio in [*result.train_ratios.values(), *result.infer_ratios.values()]
    )
    line = step_cost.table([result]).splitlines()[-1]
    assert line.startswith("| resnet18 32x32 b2 |")
    assert f"| {result.train_ratios['GDRQ']:.2f} |" in line


def test_contrasts_give_each_pairs_difference_with_its_interval(tmp_path: Path) -> None:
    """A preset's contrasts: minmax (20 of 200 images worse than every gdrq seed) minus gdrq
    is -10 points, bold, its one seed holding the images' noise alone; a pair with a side
    that has no rows is a dash."""
    results = _rows(tmp_path)
    accuracy.keep_correctness(results)
    rows = accuracy.latest_rows(results, "fashion_mnist")
    quantized = rows[rows.bits != "W32A32"]
    table = accuracy.contrast_table(quantized, results, [("minmax", "gdrq"), ("lsq", "gdrq")])
    lines = table.splitlines()
    assert lines[2] == "| line minus line | W4A4 | beyond the noise |"
    minmax, lsq = lines[4].split(" | "), lines[5].split(" | ")
    assert minmax[0] == "| minmax minus gdrq" and minmax[1].startswith("**-10.00 [")
    assert minmax[1].endswith(accuracy.IMAGES_ONLY) and minmax[2] == "lower at W4A4 |"
    assert lsq == ["| lsq minus gdrq", "—", "— |"]


def test_beyond_the_noise_names_the_widths_by_the_sign_of_their_interval() -> None:
    def interval(low: float, high: float) -> intervals.Interval:
        return intervals.Interval((low + high) / 2, low, high, "seeds", 2.0)

    cells = {"W8A8": interval(-0.1, 0.2), "W4A4": interval(0.5, 1.5), "W2A8": None}
    assert accuracy._beyond_noise(cells) == "higher at W4A4"
    cells["W3A8"] = interval(-3.0, -1.0)
    assert accuracy._beyond_noise(cells) == "higher at W4A4; lower at W3A8"
    assert accuracy._beyond_noise({"W8A8": interval(-0.1, 0.2)}) == "none"
    assert accuracy._beyond_noise({"W8A8": None}) == "—"


def test_a_post_training_learned_group_clip_is_named_as_the_search() -> None:
    """Under PTQ a learned group clip is the QL_2 search's, never trained: its line is the
    search's; a max clip and BN re-estimation are named."""
    rows = pd.DataFrame(
        {
            "method": ["groups_only", "groups_only", "groups_only"],
            "groups": ["4", "4", "per_channel"],
            "alpha_mode": ["learned", "search", "max"],
            "act_range": ["mse", "mse", "mse"],
            "bias_correction": ["false"] * 3,
            "rounding": ["nearest"] * 3,
            "bn_reestimate": ["false", "false", "true"],
        }
    )
    assert accuracy.ptq_variants(rows).tolist() == [
        "groups_only 4",
        "groups_only 4",
        "groups_only per_channel max +bn",
    ]


def test_ptq_lines_name_their_variant_and_compare_with_gdrq_rounded_alike(
    tmp_path: Path,
) -> None:
    """Post-training rows: a line per variant (rounding, a groups_only grouping and clip, an
    activation range other than the default), a budget of none, and each line compared with
    GDRQ's calibrated alike (minmax +adaround, 20 of 200 images worse than gdrq +adaround:
    -10 points; no GDRQ line at act_range=max)."""
    rng = np.random.default_rng(1)
    base = rng.random(200) < 0.9
    worse = base.copy()
    worse[np.flatnonzero(base)[:20]] = False
    results = _rows(
        tmp_path,
        [
            ("gdrq", 4, 0, 96.0, 96.0, base),
            ("gdrq", 4, 0, 97.0, 97.0, base),
            ("minmax", 4, 0, 90.0, 90.0, worse),
            ("groups_only", 4, 0, 95.0, 95.0, base),
        ],
    )
    frame = pd.read_csv(results)
    frame["schedule"] = "ptq"
    frame["rounding"] = ["nearest", "adaround 1000", "adaround 1000", "nearest"]
    frame["act_range"] = ["mse", "mse", "mse", "max"]
    frame["bias_correction"] = "false"
    frame["groups"] = ["4", "4", "1", "per_channel"]
    frame["alpha_mode"] = ["search", "search", "", "max"]
    frame["finetune_epochs"] = 0
    frame["command"] = frame.command + " " + frame.rounding.str.split(" ").str[0]
    frame.to_csv(results, index=False)
    accuracy.keep_correctness(results)
    rows = accuracy.latest_rows(results, "fashion_mnist")
    assert set(rows.budget) == {"none (post-training quantization)"}
    table = accuracy.model_table(rows, results).splitlines()
    cells = {line.split(" | ")[1]: line.split(" | ") for line in table[2:] if "| W4A4" in line}
    assert sorted(cells) == [
        "gdrq",
        "gdrq +adaround",
        "groups_only per_channel max act=max",
        "minmax +adaround",
    ]
    assert cells["minmax +adaround"][6].startswith("**-10.00 [")
    assert cells["gdrq +adaround"][6] == "—"
    assert cells["groups_only per_channel max act=max"][6] == "no GDRQ row yet"
    assert accuracy.reference_of("minmax act=percentile 99.99 +bias") == (
        "gdrq act=percentile 99.99 +bias"
    )
