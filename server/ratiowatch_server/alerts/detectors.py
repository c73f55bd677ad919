"""Pure detector functions: numbers in, verdict out; no database, no clock."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Scales the median absolute deviation to the standard deviation of a normal distribution.
MAD_TO_SIGMA = 1.4826


def robust_spike(history: np.ndarray, value: float) -> tuple[float, float]:
    """Robust z-score of ``value`` against ``history`` and its ratio to the history's median.

    The scale is floored at 1% of the median so a perfectly flat history (MAD 0) does not turn
    every tiny wobble into an infinite z-score; the caller requires both z and ratio to be large.
    """
    median = float(np.median(history))
    mad = float(np.median(np.abs(history - median)))
    scale = max(MAD_TO_SIGMA * mad, 0.01 * abs(median), 1e-12)
    z = (value - median) / scale
    ratio = value / median if median > 0 else float("inf")
    return z, ratio


def threshold_holds(value: float, op: str, bound: float) -> bool:
    return value > bound if op == ">" else value < bound


LOG_FLOOR = 1e-12


def cusum_step(
    state: dict[str, Any], value: float, baseline_steps: int, slack: float, cap: float
) -> tuple[dict[str, Any], float | None]:
    """Advance a one-sided CUSUM on log(value) by one observation.

    ``state`` is JSON-able: ``{"baseline": [...]}`` while the baseline fills, then ``{"median",
    "scale", "sum"}``. Returns the new state and the cumulative sum (None while the baseline is
    still being collected). The sum is capped so that, once the metric is back at its baseline,
    the alert clears in about ``cap`` steps rather than in as many steps as the drift lasted.
    """
    x = math.log(max(value, LOG_FLOOR))
    if "sum" not in state:
        baseline = [*state.get("baseline", []), x]
        if len(baseline) < baseline_steps:
            return {"baseline": baseline}, None
        values = np.asarray(baseline)
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median)))
        # log space: a floor of 0.05 means a 5% move is one "sigma" even if the baseline was flat
        return {"median": median, "scale": max(MAD_TO_SIGMA * mad, 0.05), "sum": 0.0}, 0.0
    z = (x - state["median"]) / state["scale"]
    total = min(cap, max(0.0, state["sum"] + z - slack))
    return {**state, "sum": total}, total
