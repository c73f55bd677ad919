"""Pure detector functions: numbers in, verdict out; no database, no clock."""

from __future__ import annotations

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
