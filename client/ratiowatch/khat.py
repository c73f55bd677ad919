"""Pareto-smoothed importance sampling k-hat of the ratios, from a bounded, mergeable tail.

k-hat (Vehtari et al., "Pareto smoothed importance sampling", JMLR 2024) is the shape of a
generalized Pareto distribution fitted to the M = ceil(min(n/5, 3 sqrt(n))) largest weights: above
0.5 the ratios have infinite variance, above 0.7 importance-sampling estimates are unreliable. The
fit is Zhang & Stephens' (2009) empirical Bayes estimate with the weakly informative prior on k,
written to give the numbers of the reference implementation (``arviz.psislw``).

Only the largest log-ratios matter, so a partial keeps its ``TAIL_SIZE`` largest (``tail``); the
largest ``TAIL_SIZE`` of a union are the largest ``TAIL_SIZE`` of the parts' tails, so tails merge
exactly across micro-batches and ranks. The fit needs the M + 1 largest values (the (M+1)-th is the
threshold), so M is capped at ``TAIL_SIZE - 1``: exact for n up to 1.86M tokens, and above that the
fit uses M = min(n/5, 3 sqrt(n), TAIL_SIZE - 1), still thousands of tail samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "TAIL_SIZE",
    "TailScreen",
    "gpd_fit",
    "merge_tails",
    "psis_khat",
    "top_numpy",
    "top_torch",
]

TAIL_SIZE = 4096
_HOST_CHUNK = 1 << 15  # elements; the float64 buffer stays in the CPU cache
_DEVICE_CHUNK = 1 << 22  # bounds the float64 temporaries on a GPU that is busy training
# Zhang & Stephens' prior as arviz sets it: b's grid scaled by the first quartile / 3, and k
# shrunk towards 0.5 as if by 10 extra observations.
_PRIOR_BS = 3.0
_PRIOR_K = 10.0
_LOG_TINY = math.log(np.finfo(float).tiny)

Float64Array = npt.NDArray[np.float64]


def psis_khat(top: Float64Array, n: int) -> float | None:
    """k-hat of the weights exp(x) of n log-ratios, given (at least) their largest ones.

    ``top`` holds the min(n, TAIL_SIZE) largest finite log-ratios, in any order. None when the
    tail has 4 samples or fewer (arviz's inf) or the fit is not finite.
    """
    if n < 2 or top.size < 2:
        return None
    m = min(math.ceil(min(n / 5.0, 3.0 * math.sqrt(n))), top.size - 1)
    largest = np.sort(_largest(top, m + 1))[::-1]
    largest = largest - largest[0]  # shifted by the maximum, for accuracy, as arviz does
    cutoff = max(float(largest[m]), _LOG_TINY)
    tail = largest[:m][largest[:m] > cutoff][::-1]  # ascending
    if tail.size <= 4:
        return None
    with np.errstate(all="ignore"):
        k, _ = gpd_fit(np.exp(tail) - math.exp(cutoff))
    return k if math.isfinite(k) else None


def gpd_fit(exceedances: Float64Array) -> tuple[float, float]:
    """(k, sigma) of a generalized Pareto fit to ascending positive exceedances.

    Zhang & Stephens' posterior mean of b = -k/sigma over a grid of 30 + sqrt(n) candidates, then
    k from b, shrunk towards 0.5 by the weakly informative prior; arviz's ``_gpdfit`` step by step.
    """
    n = exceedances.size
    grid = 30 + int(math.sqrt(n))
    b = 1.0 - np.sqrt(grid / (np.arange(1, grid + 1, dtype=np.float64) - 0.5))
    b /= _PRIOR_BS * exceedances[int(n / 4 + 0.5) - 1]
    b += 1.0 / exceedances[-1]
    k = np.log1p(-b[:, None] * exceedances).mean(axis=1)
    profile = n * (np.log(-(b / k)) - k - 1.0)
    weights = 1.0 / np.exp(profile - profile[:, None]).sum(axis=1)
    kept = weights >= 10 * np.finfo(float).eps  # negligible grid points are dropped
    weights, b = weights[kept], b[kept]
    weights /= weights.sum()
    b_post = float(b @ weights)
    k_post = float(np.log1p(-b_post * exceedances).mean())
    sigma = -k_post / b_post
    return (n * k_post + _PRIOR_K * 0.5) / (n + _PRIOR_K), sigma


def merge_tails(*tails: Float64Array) -> Float64Array:
    """The ``TAIL_SIZE`` largest values of the union of ``tails`` (exact, unordered)."""
    joined = np.concatenate(tails) if len(tails) != 1 else tails[0]
    return _largest(joined, TAIL_SIZE)


def top_numpy(new: Any, old: Any, mask: Any) -> Float64Array:
    """The ``TAIL_SIZE`` largest finite masked-in log-ratios x = new - old (or new), unordered.

    One pass over the tokens in cache-sized chunks; a token is a candidate only if it beats the
    smallest of the best ``TAIL_SIZE`` so far, so after the first few chunks almost nothing is
    copied: O(n), with no full-size temporary. The screening subtraction runs in the inputs'
    precision (float32 for float32 log-probs) with a margin covering its rounding; candidates are
    then recomputed in float64, as the statistics kernel computes x.
    """
    from ratiowatch.stats_numpy import chunk_indices  # stats_numpy imports stats, which imports us

    shape = tuple(new.shape)
    size = math.prod(shape)
    if size <= _HOST_CHUNK:  # small steps: one direct pass costs less than screening
        x = np.asarray(new, dtype=np.float64) - (0.0 if old is None else old)
        keep = np.isfinite(x) if mask is None else np.isfinite(x) & mask
        return _largest(x[keep], TAIL_SIZE)
    narrow = new.dtype.itemsize <= 4 and (old is None or old.dtype.itemsize <= 4)
    # float32 subtraction is within 2**-24 relative of the exact difference (or underflows)
    screen = TailScreen(np.float32 if narrow else np.float64, 2.0**-22 if narrow else 0.0)
    buffer = np.empty(min(_HOST_CHUNK, size), dtype=screen.dtype)
    for index in chunk_indices(shape, _HOST_CHUNK):
        part = new[index]
        other = None if old is None else old[index]
        chunk = buffer[: part.size]
        if other is None:
            np.copyto(chunk.reshape(part.shape), part)
        else:
            np.subtract(part, other, out=chunk.reshape(part.shape), dtype=screen.dtype)
        candidates = np.flatnonzero(chunk > screen.bound())  # NaN compares False
        if candidates.size == 0:
            continue
        if mask is not None:
            candidates = candidates[mask[index].reshape(-1)[candidates]]
        x = part.reshape(-1)[candidates].astype(np.float64)
        if other is not None:
            x -= other.reshape(-1)[candidates]
        screen.add(x[(x > screen.floor) & (x < math.inf)])
    return screen.result()


class TailScreen:
    """The best ``TAIL_SIZE`` values so far, compacted lazily, and the bar a candidate must beat."""

    def __init__(self, dtype: type[np.floating[Any]], margin: float) -> None:
        self.dtype = dtype
        self.margin = margin
        self.floor = -math.inf
        self._pool: list[Float64Array] = []
        self._pooled = 0

    def bound(self) -> float:
        """A bar below ``floor`` by the screening arithmetic's worst rounding error."""
        if self.floor == -math.inf:
            return -math.inf
        return self.floor - abs(self.floor) * self.margin - (1e-30 if self.margin else 0.0)

    def add(self, values: Float64Array) -> None:
        self._pool.append(values)
        self._pooled += values.size
        if self._pooled >= 4 * TAIL_SIZE:
            best = _largest(np.concatenate(self._pool), TAIL_SIZE)
            self._pool, self._pooled = [best], best.size
            self.floor = float(best.min())

    def offer(self, x: Float64Array, valid: npt.NDArray[np.bool_]) -> None:
        """Screen exact float64 log-ratios ``x``, of which only those where ``valid`` count
        (and are finite)."""
        if self.floor == -math.inf:  # nothing to beat yet: every valid value is a candidate
            self.add(x[valid])
            return
        candidates = np.flatnonzero(x > self.bound())
        if candidates.size:
            candidates = candidates[valid[candidates]]
            self.add(x[candidates])

    def result(self) -> Float64Array:
        return merge_tails(*self._pool) if self._pool else np.zeros(0)


def top_torch(new: Any, old: Any, mask: Any) -> Float64Array:
    """``top_numpy`` for tensors on a device: ``torch.topk`` per chunk, one copy to the host."""
    import torch

    from ratiowatch.stats_numpy import chunk_indices

    shape = tuple(new.shape)
    best = []
    for index in chunk_indices(shape, _DEVICE_CHUNK):
        x = new[index].reshape(-1).to(torch.float64)
        if old is not None:
            x = x - old[index].reshape(-1).to(torch.float64)
        valid = x < math.inf  # also False for NaN
        if mask is not None:
            valid &= mask[index].reshape(-1)
        x = torch.where(valid, x, -math.inf)
        best.append(torch.topk(x, min(TAIL_SIZE, x.numel()), sorted=False).values)
    if not best:
        return np.zeros(0)
    host: Float64Array = torch.cat(best).cpu().numpy()
    return merge_tails(host[host > -math.inf])


def _largest(values: Float64Array, k: int) -> Float64Array:
    if values.size <= k:
        return values
    return np.partition(values, values.size - k)[values.size - k :]
