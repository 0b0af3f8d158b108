"""Figures a run and the board both draw: one layer's weight histogram before and after
Scale-Clip (the paper's picture), on matplotlib's object API (no pyplot state, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def panels(count: int) -> tuple[Figure, list[Any]]:
    """A figure of `count` panels side by side (matplotlib's object API: no pyplot state,
    no display needed)."""
    figure = Figure(figsize=(5 * count, 3.8), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)
    return figure, list(axes[0])


def weight_histogram(stats: dict[str, Any], layer: str | None = None) -> tuple[Figure, str]:
    """One layer's weight histogram before and after Scale-Clip from a run's layer_stats.json
    (default layer: the middle one); the figure and the layer shown."""
    names = list(stats["before"])
    layer = layer or names[len(names) // 2]
    if layer not in stats["before"]:
        raise ValueError(f"layer {layer!r} is not quantized in this run; layers: {names}")
    phases = [phase for phase in ("before", "after") if phase in stats]
    figure, axes = panels(len(phases))
    for axis, phase in zip(axes, phases):
        histogram = stats[phase][layer]["histogram"]
        edges, counts = histogram["edges"], histogram["counts"]
        axis.stairs(counts, edges, fill=True)
        kurtosis = stats[phase][layer]["kurtosis"]
        axis.set(title=f"{phase} Scale-Clip: kurtosis {kurtosis:.2f}", xlabel=f"{layer} weight")
    axes[0].set_ylabel("count")
    return figure, layer


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path
