"""A choosing preset's pick, made by code from its validation rows, by the rule its comment
states before the rows exist.

A preset that chooses one knob names it under `chooses` (`knob`: the override, `column`: the
results column that records it, `default`: the value kept unless another wins). Per network, a
value's score is its mean validation top1 over every line and width of the grid; a value
replaces the default where its score is higher on every network; where several do, the one with
the highest mean of the networks' scores. Printed under the preset's validation tables, so the
value pinned in the next preset is the one this code read off the rows, not a reading by eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from omegaconf import DictConfig


@dataclass(frozen=True)
class KnobRule:
    knob: str  # the override, e.g. trainer.calibrate.act_range
    column: str  # the results column that records it (the value, then any parameter of it)
    default: str  # kept unless another value scores higher on every network

    @classmethod
    def of_preset(cls, preset: DictConfig) -> KnobRule | None:
        chooses = preset.get("chooses")
        if chooses is None:
            return None
        return cls(str(chooses.knob), str(chooses.column), str(chooses.default))


def scores(rows: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per knob value (index) and network (columns): the mean validation top1 of the quantized
    rows, and how many rows it averages."""
    quantized = rows[rows.bits != "W32A32"].assign(value=rows[column].astype(str))
    grouped = quantized.groupby(["value", "model"], sort=True).val_folded
    return grouped.mean().unstack("model"), grouped.size().unstack("model")


def chosen(score: pd.DataFrame, default: str) -> str:
    """The rule: a value replaces `default` where it scores higher on every network (a network
    a value has no rows on counts as not higher); among several, the highest mean over the
    networks."""
    if default not in score.index:
        raise ValueError(f"no rows with the default value {default!r} to compare with")
    better = score.gt(score.loc[default], axis=1).all(axis=1)
    winners = score[better]
    return default if winners.empty else str(winners.mean(axis=1).idxmax())


def choice_text(rows: pd.DataFrame, rule: KnobRule) -> str:
    """The scores as a Markdown table (mean (rows) per network) and the value chosen."""
    score, counts = scores(rows, rule.column)
    if rule.default not in score.index:
        return f"No rows with `{rule.knob}={rule.default}` yet: nothing chosen."
    networks = list(score.columns)
    lines = [
        f"Mean validation top1 per `{rule.knob}` (rows averaged):",
        "",
        "| value | " + " | ".join(networks) + " |",
        "|---|" + "---:|" * len(networks),
    ]
    for value in score.index:
        cells = [
            "—"
            if pd.isna(score.at[value, net])
            else f"{score.at[value, net]:.2f} ({int(counts.at[value, net])})"
            for net in networks
        ]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    rule_text = (
        f"a value replaces `{rule.default}` where its mean is higher on every network; among "
        "several, the highest mean over the networks"
    )
    pick = chosen(score, rule.default).split(" ")[0]  # `percentile 99.99`: its parameter apart
    lines += ["", f"Chosen on validation ({rule_text}): `{rule.knob}={pick}`."]
    return "\n".join(lines)
