"""The published statistics of a complete step, from its merged partial (DESIGN section 3).

Every value is a finite float or None: a ratio that overflows float64 (log-ratio above 709) has no
finite mean, and None says "undefined" to the server and the dashboard without a NaN in the JSON.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ratiowatch.khat import psis_khat
from ratiowatch.records import finite_or_none

if TYPE_CHECKING:
    from ratiowatch.stats import FamilyPartial

__all__ = ["QUANTILES", "QUANTILE_KEYS", "finalize_partial"]

QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
QUANTILE_KEYS = ("p0.1", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "p99.9")
_TOKEN_KEYS = (
    "mean",
    "std",
    "min",
    "max",
    *QUANTILE_KEYS,
    "ess",
    "clip_low",
    "clip_high",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "logratio_mean",
    "logratio_std",
    "khat",
)
_SEQ_KEYS = (
    "seq_logratio_p50",
    "seq_logratio_p99",
    "seq_logratio_min",
    "seq_logratio_max",
    "seq_ess",
    "seq_geo_p1",
    "seq_geo_p50",
    "seq_geo_p99",
    "seq_khat",
)
Stats = dict[str, float | None]


def finalize_partial(p: FamilyPartial) -> Stats:
    """The statistics of DESIGN section 3 (``FamilyPartial.finalize`` is the public entry)."""
    out: Stats = {"count": p.count, "nonfinite": p.nonfinite}
    if p.count == 0:
        out.update(dict.fromkeys(_TOKEN_KEYS))
        if p.with_advantages:
            out["clip_active"] = None
        out.update(dict.fromkeys(_SEQ_KEYS))
        return out
    n = p.count
    mean_r = _exp(p.max_x + math.log(p.sum_r / n))
    low, high = _exp(p.min_x), _exp(p.max_x)
    out.update(mean=mean_r, std=_ratio_std(p), min=low, max=high)
    values = p.sketch.quantiles(QUANTILES) or [math.nan] * len(QUANTILES)
    floor, ceiling = low or 0.0, math.inf if high is None else high
    for key, value in zip(QUANTILE_KEYS, values, strict=True):
        # The exact quantile lies in [min, max]: clamping only moves the estimate closer.
        out[key] = finite_or_none(min(max(value, floor), ceiling))
    out["ess"] = min(p.sum_r * p.sum_r / (n * p.sum_r2), 1.0)
    out["clip_low"] = p.clip_low / n
    out["clip_high"] = p.clip_high / n
    if p.with_advantages:
        out["clip_active"] = p.clip_active / p.adv_count if p.adv_count else None
    mean_x = p.sum_x / n
    # k3 = mean(expm1(x) - x): subtracting the sums costs no more accuracy than subtracting per
    # token, since each expm1(x) already carries an error of eps * |x|.
    k3 = (p.sum_e - p.sum_x) / n
    if not math.isfinite(k3):  # expm1 overflowed; its accuracy near x = 0 is then irrelevant
        k3 = math.inf if mean_r is None else mean_r - 1.0 - mean_x
    out.update(
        kl_k1=finite_or_none(-mean_x),
        kl_k2=finite_or_none(p.sum_x2 / (2 * n)),
        kl_k3=finite_or_none(k3),
        logratio_mean=finite_or_none(mean_x),
        logratio_std=finite_or_none(math.sqrt(max(p.sum_x2 / n - mean_x * mean_x, 0.0))),
        khat=psis_khat(p.tail, n),
    )
    out.update(_sequence_stats(p.seq_sum, p.seq_count))
    return out


def _ratio_std(p: FamilyPartial) -> float | None:
    """Population std of r from whichever sum representation cancels less.

    Var = E[v^2] - E[v]^2 loses about eps * E[v^2] for v = r - 1 (the expm1 sums) or v = r (the
    shifted sums); r - 1 wins near r = 1, r wins when every ratio is tiny.
    """
    n = p.count
    shifted_var = p.sum_r2 / n - (p.sum_r / n) ** 2
    log_scale = 2.0 * p.max_x
    e2 = p.sum_e2 / n
    if math.isfinite(e2) and (e2 == 0.0 or math.log(e2) < log_scale + math.log(p.sum_r2 / n)):
        variance: float | None = e2 - (p.sum_e / n) ** 2
    else:
        variance = _exp(log_scale + math.log(shifted_var)) if shifted_var > 0 else 0.0
    if variance is None:
        return None
    return finite_or_none(math.sqrt(max(variance, 0.0)))


def _sequence_stats(seq_sum: npt.NDArray[np.float64], seq_count: npt.NDArray[np.int64]) -> Stats:
    present = seq_count > 0
    sums = seq_sum[present]
    if sums.size == 0:
        return dict.fromkeys(_SEQ_KEYS)
    with np.errstate(over="ignore"):
        geo = np.exp(sums / seq_count[present])
    geo.sort()
    sums.sort()
    # Kish ESS over w = exp(s), with w scaled by the largest: s reaches hundreds in a failing run.
    w = np.exp(sums - sums[-1])
    seq_ess = float(w.sum()) ** 2 / (sums.size * float(w @ w))
    p50, p99 = _sorted_quantiles(sums, (0.5, 0.99))
    geo_p1, geo_p50, geo_p99 = _sorted_quantiles(geo, (0.01, 0.5, 0.99))
    return {
        "seq_logratio_p50": finite_or_none(p50),
        "seq_logratio_p99": finite_or_none(p99),
        "seq_logratio_min": finite_or_none(float(sums[0])),
        "seq_logratio_max": finite_or_none(float(sums[-1])),
        "seq_ess": min(seq_ess, 1.0),
        "seq_geo_p1": finite_or_none(geo_p1),
        "seq_geo_p50": finite_or_none(geo_p50),
        "seq_geo_p99": finite_or_none(geo_p99),
        "seq_khat": psis_khat(sums, sums.size),
    }


def _sorted_quantiles(values: npt.NDArray[np.float64], qs: tuple[float, ...]) -> list[float]:
    """np.quantile's default (linear) method on sorted values, without its per-call overhead."""
    last = values.size - 1
    out = []
    for q in qs:
        position = q * last
        below = math.floor(position)
        above = min(below + 1, last)
        lo, hi = float(values[below]), float(values[above])
        out.append(lo if hi == lo else lo + (hi - lo) * (position - below))
    return out


def _exp(value: float) -> float | None:
    return math.exp(value) if value < 709.78 else None
