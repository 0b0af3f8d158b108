"""The board's figures: score against bit-width and weight kurtosis before and after
Scale-Clip; the weight histogram (the paper's picture) is reporting/figures.py's, shared with
the run's logger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from gdrq_bench.board.leaderboard import aggregate
from gdrq_bench.reporting.figures import panels

COLLAPSE = 15.0  # points below the float score where the axis stops


def _label(method: str, groups: str, strategy: object) -> str:
    """A line's name: the method, and for methods with groups (rows with a group strategy)
    the group count."""
    if not isinstance(strategy, str) or not strategy:
        return method
    return f"{method} {'g' + groups if str(groups).isdigit() else groups}"


def score_against_bits(rows: pd.DataFrame) -> Figure:
    """One panel per data set and model: the mean folded score over seeds at each bit-width
    (widest first), one line per method and group count, the float
    model's score dashed. The axis spans the scores within COLLAPSE points of the float score;
    a score below that (a collapsed run) is drawn on the bottom edge with its value, so that
    it does not flatten every difference that matters."""
    lines = aggregate(rows)
    quantized = lines[lines.method != "float"]
    models = sorted(quantized.groupby(["dataset", "model"]).groups)
    figure, axes = panels(len(models))
    for axis, (dataset, model) in zip(axes, models):
        panel = quantized[(quantized.dataset == dataset) & (quantized.model == model)]
        order = (
            panel.drop_duplicates("bits")
            .sort_values(["w_bits", "a_bits"], ascending=False)
            .bits.tolist()
        )
        float_score = rows[(rows.dataset == dataset) & (rows.model == model)].fp.max()
        shown = panel.folded[panel.folded >= float_score - COLLAPSE]
        bottom = min(shown.min(), float_score) - 1 if not shown.empty else float_score - COLLAPSE
        top = max(panel.folded.max(), float_score) + 1
        for (method, groups, strategy), line in panel.groupby(
            ["method", "groups", "group_strategy"], dropna=False
        ):
            # the best configuration's mean at each width (another trainer is another line
            # of the leaderboard, not of the plot)
            best = line.groupby("bits").folded.max().reindex(order)
            label = _label(method, groups, strategy)
            axis.plot(order, best.clip(lower=bottom).to_numpy(), marker="o", label=label)
            for bits, score in best[best < bottom].items():
                axis.annotate(f"{score:.1f}", (order.index(bits), bottom), fontsize="x-small",
                              textcoords="offset points", xytext=(3, 3))  # fmt: skip
        axis.axhline(float_score, color="grey", linestyle="--", label="float")
        axis.set_ylim(bottom, top)
        axis.set(title=f"{dataset} / {model}", xlabel="bits", ylabel=f"{panel.metric.iloc[0]} (%)")
        axis.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def kurtosis_before_after(rows: pd.DataFrame) -> Figure:
    """Mean weight kurtosis of the layers before and after the reshape stage, one pair of bars
    per configuration that reshapes (kurtosis_after set)."""
    lines = aggregate(rows)
    reshaped = lines[lines.kurtosis_after.notna()]
    columns = (reshaped.model, reshaped.method, reshaped.groups, reshaped.group_strategy)
    labels = [
        f"{model} {_label(method, groups, strategy)} {bits}"
        for (model, method, groups, strategy), bits in zip(zip(*columns), reshaped.bits)
    ]
    figure, (axis,) = panels(1)
    figure.set_size_inches(max(5, 0.6 * len(labels) + 2), 4)
    positions = range(len(labels))
    axis.bar([p - 0.2 for p in positions], reshaped.kurtosis_before, 0.4, label="before")
    axis.bar([p + 0.2 for p in positions], reshaped.kurtosis_after, 0.4, label="after")
    axis.axhline(1.8, color="grey", linestyle=":", label="uniform (1.8)")
    axis.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize="small")
    axis.set(ylabel="mean weight kurtosis", title="Scale-Clip: weight kurtosis")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def histogram_source(rows: pd.DataFrame) -> tuple[pd.Series, dict[str, Any]] | None:
    """The most recent reshaping row whose run directory still holds layer_stats.json."""
    reshaping = rows[rows.kurtosis_after.notna() & ~rows.dirty]
    candidates = reshaping.sort_values("finished_at", ascending=False)
    for _, row in candidates.iterrows():
        path = Path(str(row.run_dir)) / "layer_stats.json"
        if path.is_file():
            stats = json.loads(path.read_text())
            if "after" in stats and "histogram" in next(iter(stats["before"].values())):
                return row, stats
    return None
