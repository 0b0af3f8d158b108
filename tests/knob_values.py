"""A value of each QuantSpec knob other than its default: what the tests that check which knobs
a run reads change, one knob at a time."""

from __future__ import annotations

# a value of each knob other than its default, one that changes the numbers of a method that
# reads it (first_last_bits=same: the edge layers at 4 bits by the method itself)
OTHER_KNOB_VALUES = {
    "groups": 2,
    "group_strategy": "kmeans",
    "alpha": "search",
    "alpha_every": 1,
    "regroup_every": 1,
    "search_points": 16,
    "k_w": 1.5,
    "k_a": 0.5,
    "weight_stat": "std",
    "act_stat": "mean_abs",
    "act_momentum": 0.7,
    "first_last_bits": "same",
    "weight_grad": "pass",
    "clip_style": "project",
    "scale_clip_qat": True,
    "skip": ["3"],
    "scale_clip_8bit": True,
}
