"""bench/float_recipe.py: the plateau rule, the float runs it makes and skips, its table."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pytest

from gdrq_bench.reporting.results import COLUMNS, append_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import float_recipe
from float_recipe import Plateau, plateau


def test_plateau_is_the_smallest_epochs_whose_longer_run_gains_under_a_tenth() -> None:
    # 12 -> 18 gains 0.05; 8 -> 12 gains 1.0; 18 -> 27 gains 0.05 too, but 12 comes first
    assert plateau({8: 90.0, 12: 91.0, 18: 91.05, 27: 91.1}) == Plateau(12, 18, 0.05)
    assert plateau({27: 91.1, 8: 90.0, 18: 91.05, 12: 91.0}) == Plateau(12, 18, 0.05)  # any order
    assert plateau({8: 92.0, 12: 91.5}) == Plateau(8, 12, -0.5)  # a longer run that loses


def test_no_plateau_while_every_longer_run_gains_a_tenth_or_more() -> None:
    assert plateau({8: 90.0, 12: 90.5, 18: 90.7, 27: 90.8}) is None
    assert plateau({12: 91.0}) is None  # one run: nothing to compare with
    assert plateau({}) is None


def test_the_longer_run_is_the_shortest_at_least_one_and_a_half_times_as_long() -> None:
    assert float_recipe.next_longer([8, 10, 12, 20], 8) == 12  # 10 < 1.5 x 8
    assert float_recipe.next_longer([8, 10, 12, 20], 10) == 20
    assert float_recipe.next_longer([8, 10, 12, 20], 20) is None
    # 10 gains nothing over 8 but is not 1.5 x 8; 12 gains 0.5; 20 gains 0.05 over 12 (>= 18)
    assert plateau({8: 90.0, 10: 90.0, 12: 90.5, 20: 90.55}) == Plateau(12, 20, 0.05)
    # no run is 1.5 x another: no E can be judged
    assert plateau({8: 90.0, 10: 90.0, 11: 90.0}) is None
    assert plateau({9: 90.0, 12: 90.0, 13: 90.0}) is None


def test_a_gain_of_exactly_a_tenth_is_no_plateau_and_equal_scores_are() -> None:
    assert 91.3 - 91.2 < 0.1  # in floats; the rule reads the row's 4 decimals
    assert plateau({8: 91.2, 12: 91.3}) is None
    assert plateau({8: 91.21, 12: 91.3}) == Plateau(8, 12, 0.09)
    assert plateau({8: 91.2, 12: 91.2, 18: 91.2}) == Plateau(8, 12, 0.0)


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    """A preset of two float models, MobileNetV2's with its own float epochs, and a holdout
    and results_dir of its own that the float recipe replaces."""
    path = tmp_path / "two_models.yaml"
    path.write_text(
        "overrides:\n"
        "  - dataset=fashion_mnist\n"
        "  - dataset.holdout=100\n"
        "  - results_dir=bench/results\n"
        "  - logger=none\n"
        "grids:\n"
        "  - model: resnet20\n"
        "    method: gdrq,minmax\n"
        "    bits: 4,w2a4\n"
        "  - model: mobilenet_v2_cifar\n"
        "    trainer.fp.epochs: 12\n"
        "    method: gdrq\n"
        "    bits: 4\n"
        "    seed: 0,1\n"
    )
    return path


def test_commands_set_the_epochs_holdout_and_results_dir(preset: Path) -> None:
    commands = float_recipe.recipe_commands(str(preset), 5000, [8, 27], 2, Path("out/fr"))
    recorded = [float_recipe.recorded(command) for command in commands]
    common = "gdrq-run dataset=fashion_mnist logger=none trainer.threads="
    assert [text.split(" trainer.threads=")[1].split(" ", 1)[1] for text in recorded] == [
        "dataset.holdout=5000 bits=32 model=resnet20 trainer.fp.epochs=8 results_dir=out/fr",
        "dataset.holdout=5000 bits=32 model=resnet20 trainer.fp.epochs=27 results_dir=out/fr",
        "dataset.holdout=5000 bits=32 model=mobilenet_v2_cifar trainer.fp.epochs=8 "
        "results_dir=out/fr",
        "dataset.holdout=5000 bits=32 model=mobilenet_v2_cifar trainer.fp.epochs=27 "
        "results_dir=out/fr",
    ]
    assert all(text.startswith(common) for text in recorded)
    assert all(Path(command[0]).name == "gdrq-run" for command in commands)
    assert [float_recipe.epochs_of(command) for command in commands] == [8, 27, 8, 27]


def _float_row(command: str, val: float | str, test: float, train_s: float, **values: object):
    """A float run's results row (every column of the table) recording `command`."""
    model = next(arg for arg in command.split() if arg.startswith("model=")).split("=")[1]
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        command=command,
        task="classification",
        dataset="fashion_mnist",
        model=model,
        method="gdrq",
        w_bits=32,
        a_bits=32,
        metric="top1",
        fp=test,
        quant=test,
        folded=test,
        drop=0.0,
        train_s=train_s,
        fp_source="trained" if train_s else "cache",
        git_sha="abc123",
        eval_samples=10000,
        val_samples=5000 if val != "" else "",
        val_fp=val,
        val_folded=val,
        seed=0,
        finished_at="2026-01-01T00:00:00",
    )
    row.update(values)
    return row


def test_run_goes_in_rounds_fewest_epochs_first_and_stops_a_model_at_its_plateau(
    preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    results_dir = tmp_path / "float_recipe"
    results = results_dir / "classification.csv"
    commands = float_recipe.recipe_commands(str(preset), 5000, [8, 12, 18], 2, results_dir)
    assert all("trainer.resume=true" in command for command in commands)  # a kill continues
    # ResNet-20 at 12 epochs has a row from before the bench resumed its runs (no resume=)
    done = float_recipe.recorded(commands[1])
    assert "resume" not in done
    append_row(results, _float_row(done, 92.0, 92.1, 100.0))
    validation = {("resnet20", 8): 91.95, ("mobilenet_v2_cifar", 8): 90.0}
    validation |= {("mobilenet_v2_cifar", 12): 91.0, ("mobilenet_v2_cifar", 18): 91.5}
    rounds = []

    def run_jobs(jobs, slots, after_each):
        assert slots == 2
        rounds.append([(float_recipe.epochs_of(job.command), job.command[-3]) for job in jobs])
        for job in jobs:  # each run writes its row, its command as gdrq-run records it
            assert job.needs is None and job.gives is None
            text = shlex.join(["gdrq-run", *job.command[1:]])
            model = job.command[-3].removeprefix("model=")
            val = validation[model, float_recipe.epochs_of(job.command)]
            append_row(results, _float_row(text, val, val, 100.0))
            after_each()
        return []

    monkeypatch.setattr(float_recipe, "run_jobs", run_jobs)
    float_recipe.run(str(preset), 5000, [8, 12, 18], 2, results_dir)
    assert rounds == [
        [(8, "model=resnet20"), (8, "model=mobilenet_v2_cifar")],
        [(12, "model=mobilenet_v2_cifar")],
        [(18, "model=mobilenet_v2_cifar")],  # ResNet-20: 12 epochs gain +0.05 over 8
    ]
    printed = capsys.readouterr().err
    assert f"skipped, has a row: {done}" in printed
    assert "at most 5 float runs to go (1 already in" in printed
    assert printed.count("to go: gdrq-run ") == 5
    assert "4 runs ended" in printed
    assert "plateau at 8 epochs (12 gain +0.05): gdrq-run " in printed
    assert "model=resnet20 trainer.fp.epochs=18" in printed.split("plateau at 8 epochs")[1]
    # the rows written with trainer.resume=true are the same curve as the row without it
    (resnet, mobilenet) = float_recipe.curves(results_dir)
    assert [p.epochs for p in resnet.points] == [8, 12]
    assert [p.epochs for p in mobilenet.points] == [8, 12, 18]
    assert float_recipe.recorded_commands(results_dir) >= {done}

    monkeypatch.setattr(float_recipe, "run_jobs", lambda jobs, slots, after_each: ["a b"])
    with pytest.raises(SystemExit, match="runs failed: a b"):
        float_recipe.run(str(preset), 5000, [8], 2, tmp_path / "empty")


def test_table_shows_each_curve_and_the_recipe_chosen_on_validation(tmp_path: Path) -> None:
    def command(model: str, epochs: int) -> str:
        float_command = ["/venv/bin/gdrq-run", "dataset=fashion_mnist", "bits=32", model]
        made = float_recipe.recipe_command(float_command, 5000, epochs, Path("fr"))
        return float_recipe.recorded(made)

    resnet, mobilenet = "model=resnet20", "model=mobilenet_v2_cifar"
    rows = [
        _float_row(command(resnet, 8), 92.0, 92.5, 2160.0),
        _float_row(command(resnet, 18), 92.65, 93.4, 4860.0),  # out of order: sorted
        _float_row(command(resnet, 12), 92.6, 93.0, 3240.0),
        _float_row(command(mobilenet, 8), 91.0, 91.2, 3360.0),
        _float_row(command(mobilenet, 12), 91.5, 91.9, 11000.0),  # wall time, slowed by others
        _float_row(command(mobilenet, 8), 91.0, 91.2, 0.0),  # a rerun from the cache
        _float_row(command(resnet, 27).replace("=5000", "=0"), "", 93.5, 7000.0),  # no holdout
        _float_row(command(resnet, 27), 99.0, 99.0, 7000.0, w_bits=4, a_bits=4),  # quantized
    ]
    results = tmp_path / "classification.csv"
    for row in rows:
        append_row(results, row)
    # another task's table in the same folder: its own metric, no images-to-points note
    detector = "gdrq-run dataset.holdout=64 bits=32 task=detection model=resnet18"
    for epochs, val in ((12, 20.0), (18, 24.5)):
        detection = _float_row(f"{detector} trainer.fp.epochs={epochs}", val, val + 1, 600.0)
        detection.update(task="detection", dataset="shapes", model="resnet18", metric="bbox_ap")
        append_row(tmp_path / "detection.csv", detection | {"val_samples": 64})
    curves = float_recipe.curves(tmp_path)
    assert [(curve.model, len(curve.points)) for curve in curves] == [
        ("resnet20", 3),
        ("mobilenet_v2_cifar", 2),
        ("resnet18", 2),
    ]
    detector_text = float_recipe.curve_table(curves[2])
    assert "| epochs | validation bbox_ap (64 images) | test bbox_ap (information only) |" in (
        detector_text
    )
    assert "held-out image is" not in detector_text
    assert detector_text.endswith(
        "+4.50 points over the previous (12 epochs). One core trains 0.6 min per epoch (the "
        "fastest run)."
    )
    resnet_text = float_recipe.curve_table(curves[0])
    assert resnet_text.startswith(
        "### fashion_mnist, resnet20: float epochs, chosen on 5,000 held-out training images\n\n"
        "`gdrq-run dataset=fashion_mnist dataset.holdout=5000 bits=32 model=resnet20 "
        "trainer.fp.epochs=E results_dir=fr`; code abc123. One held-out image is 0.02 points."
    )
    assert (
        "| epochs | validation top1 (5,000 images) | test top1 (information only) "
        "| train min (wall) |\n"
        "|---:|---:|---:|---:|\n"
        "| 8 | 92.00 | 92.50 | 36.0 |\n"
        "| 12 | 92.60 | 93.00 | 54.0 |\n"
        "| 18 | 92.65 | 93.40 | 81.0 |\n"
    ) in resnet_text
    assert resnet_text.endswith(
        "gains less than 0.1 points of validation top1): plateau at 12 epochs: 18 epochs gain "
        "+0.05 points of validation top1 (< 0.1). One core trains 4.5 min per epoch (the fastest "
        "run)."
    )
    mobilenet_text = float_recipe.curve_table(curves[1])
    assert "| 8 | 91.00 | 91.20 | 56.0 |\n| 12 | 91.50 | 91.90 | 183.3 |" in mobilenet_text
    assert mobilenet_text.endswith(
        "no plateau yet: the longest run, 12 epochs, is +0.50 points over the previous "
        "(8 epochs). One core trains 7.0 min per epoch (the fastest run)."  # 18 epochs fit
    )


def test_choice_of_one_run_and_of_runs_never_timed() -> None:
    point = float_recipe.Point
    assert float_recipe.choice([point(8, 90.0, 90.0, None)]) == (
        "no plateau yet: one run only (8 epochs)."
    )
    cached_and_slow = [point(8, 90.0, 90.0, None), point(12, 90.0, 90.1, 20000.0)]
    assert float_recipe.choice(cached_and_slow) == (
        "plateau at 8 epochs: 12 epochs gain +0.00 points of validation top1 (< 0.1). "
        "One core trains 27.8 min per epoch (the fastest run)."
    )
    assert float_recipe._minutes(None) == "cached"


def test_without_a_plateau_the_recipe_is_the_longest_run_whose_next_would_not_fit() -> None:
    point = float_recipe.Point
    # 400 s per epoch from the 8-epoch run; 18 epochs (40 min) ran slowed down by others
    runs = [point(8, 90.0, 90.0, 3200.0), point(12, 90.5, 90.4, 4800.0)]
    runs += [point(18, 91.0, 91.1, 12000.0), point(27, 91.5, 91.3, 10800.0)]
    assert float_recipe.seconds_per_epoch(runs) == 400.0
    assert float_recipe.choice(runs) == (  # 27 x 400 s = 3.0 h fits; 41 x 400 s does not
        "no plateau yet: the longest run, 27 epochs, is +0.50 points over the previous "
        "(18 epochs). One core trains 6.7 min per epoch (the fastest run). The next longer run "
        "(41 epochs, about 4.6 h) would not fit about 3 hours of one core (10,800 s): the "
        "recipe is 27 epochs (validation top1 91.50), the longest that fits, short of its "
        "plateau."
    )
    # a run over the budget does not count as the longest that fits
    assert "the recipe is 27 epochs" in float_recipe.choice([*runs, point(41, 92.0, 92.0, None)])
    assert float_recipe.choice([point(40, 92.0, 92.0, 40 * 400.0)]) == (
        "no plateau, and no run fits about 3 hours of one core. One core trains 6.7 min per "
        "epoch (the fastest run)."
    )


def test_table_command_prints_the_curves_and_says_when_there_are_none(
    tmp_path: Path, capsys
) -> None:
    results = tmp_path / "classification.csv"
    float_recipe.main(["table", "--results", str(tmp_path)])  # no table yet
    assert "No float run with a validation score and its epochs" in capsys.readouterr().out
    command = "gdrq-run dataset.holdout=5000 bits=32 model=resnet20 trainer.fp.epochs=8"
    append_row(results, _float_row(command, 92.0, 92.5, 2160.0))
    float_recipe.main(["table", "--results", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| 8 | 92.00 | 92.50 | 36.0 |" in printed
    assert "no plateau yet: one run only (8 epochs)." in printed
    results.unlink()  # a float run that does not name its epochs: not on a curve
    append_row(results, _float_row(command.replace(" trainer.fp.epochs=8", ""), 92.0, 92.5, 1.0))
    float_recipe.main(["table", "--results", str(tmp_path)])
    assert "No float run with a validation score and its epochs" in capsys.readouterr().out


def test_epochs_argument_and_the_make_results_step() -> None:
    import make_results

    assert float_recipe._epochs("27,8,12,8") == [8, 12, 27]
    with pytest.raises(argparse.ArgumentTypeError):
        float_recipe._epochs("0,8")
    steps = make_results.steps(jobs=3)
    assert [step.name for step in steps][:3] == ["float_recipe", "choices", "accuracy"]
    recipe = steps[0]
    assert recipe.commands[0][1:] == (
        "bench/float_recipe.py",
        "run",
        "--preset",
        "bench_fashion",
        "--jobs",
        "3",
    )
    assert recipe.commands[1][1:5] == ("bench/float_recipe.py", "run", "--preset", "bench_shapes")
    assert recipe.commands[-1][1:] == ("bench/float_recipe.py", "table")  # --tables-only's


def test_run_makes_no_run_that_would_cost_over_about_3_hours_of_one_core(
    preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    results_dir = tmp_path / "float_recipe"
    eight, twelve, *_ = float_recipe.recipe_commands(str(preset), 5000, [8, 12], 2, results_dir)
    # ResNet-20's 8 epochs took 1,000 s each: 12 epochs would take 3.3 h; MobileNetV2 has none
    append_row(
        results_dir / "classification.csv",
        _float_row(float_recipe.recorded(eight), 91.0, 91.0, 8000.0),
    )
    rounds = []

    def run_jobs(jobs, slots, after_each):
        rounds.append([job.command[-3] for job in jobs])
        return []

    monkeypatch.setattr(float_recipe, "run_jobs", run_jobs)
    float_recipe.run(str(preset), 5000, [8, 12], 2, results_dir)
    assert rounds == [["model=mobilenet_v2_cifar"], ["model=mobilenet_v2_cifar"]]
    printed = capsys.readouterr().err
    reason = "12 epochs would take about 3.3 h of one core"
    assert f"{reason}: {float_recipe.recorded(twelve)} is not needed" in printed
