"""Extreme-preserving downsampling of one series for a chart of a given width."""

from __future__ import annotations

import numpy as np
from tsdownsample import MinMaxLTTBDownsampler

MIN_POINTS = 4


def downsample(steps: np.ndarray, values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` of the series, keeping every spike a full-resolution chart would show.

    MinMaxLTTB pre-selects each bucket's min and max, then LTTB picks among them: a one-step spike
    survives any reduction, where plain striding or averaging hides it. Null values are dropped
    (they are alerted on separately); ``steps`` must be sorted, as tsdownsample silently returns
    two points for unsorted input.
    """
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if steps.size <= points:
        return steps, values
    indices = MinMaxLTTBDownsampler().downsample(
        np.ascontiguousarray(steps), np.ascontiguousarray(values), n_out=max(points, MIN_POINTS)
    )
    return steps[indices], values[indices]
