"""The k-hat tail (``khat.top_numpy``'s result) from the fused numba kernel's by-products.

The sketch bins count the valid log-ratios exactly per log-bucket, so they give the lowest bucket
``b`` with at least ``TAIL_SIZE`` values in buckets >= b. A second pass copies only the values in
those buckets, reading only the pieces whose largest x (kept by the first pass) reaches bucket b;
``np.partition`` then picks the exact ``TAIL_SIZE`` largest of these few candidates. When bucket b
alone holds very many values (say every x is 0), and for small steps, ``top_numpy`` is used.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from ratiowatch.khat import TAIL_SIZE, merge_tails, top_numpy
from ratiowatch.numba_pool import POOL
from ratiowatch.sketch import KEY_OFFSET, LN_GAMMA
from ratiowatch.stats_numba import _PIECE, _bin, reduce_numba_parts

__all__ = ["reduce_numba_tail"]

_SUB = 64  # tokens screened at a time
_DIRECT = 1 << 15  # up to this many tokens, khat.top_numpy is faster
_MAX_CANDIDATES = 64 * TAIL_SIZE  # beyond this, a second full pass costs less than the copies

Float64Array = npt.NDArray[np.float64]


def reduce_numba_tail(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> Any:
    """``reduce_numba``'s result and, fifth, ``top_numpy(new, old, mask)`` (up to order)."""
    *reduction, arrays, tops = reduce_numba_parts(new, old, mask, advantages, low, high)
    if arrays is None:
        return (*reduction, np.zeros(0))
    if arrays[0].size <= _DIRECT:  # one direct numpy pass costs less than finding the bucket
        return (*reduction, top_numpy(new, old, mask))
    bins = reduction[1]
    above = np.cumsum(bins[::-1])[::-1]  # above[b]: valid tokens in bins >= b
    first = int(np.flatnonzero(above >= min(TAIL_SIZE, above[0]))[-1])
    need = int(above[first])
    if need == 0:
        return (*reduction, np.zeros(0))
    if need > _MAX_CANDIDATES:
        return (*reduction, top_numpy(new, old, mask))
    if tops.shape[0] > 1 and POOL.acquire():
        try:
            found, counts = _collect_parallel(arrays, tops, first, need)
        finally:
            POOL.release()
    else:
        found, counts = _collect_serial(arrays, tops, first, need)
    tail = np.concatenate([found[k, : counts[k]] for k in range(counts.size)])
    return (*reduction, merge_tails(tail))


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _collect(new: Any, old: Any, mask: Any, block: int, tops: Any, first: int, out: Any) -> int:
    """Copies block ``block``'s valid x with bin >= ``first`` to ``out``; returns how many.

    The inputs are separate arguments: numba prunes ``is None`` tests only on arguments.
    """
    size, blocks = new.size, tops.shape[0]
    start, stop = size * block // blocks, size * (block + 1) // blocks
    # Half a bucket below bucket ``first``: a cheap, vectorised screen, whose rare hits are then
    # checked exactly (bin 0 holds everything below the sketch's range).
    edge = (first + KEY_OFFSET - 1.5) * LN_GAMMA if first > 0 else -math.inf
    found = 0
    for piece, at in enumerate(range(start, stop, _PIECE)):
        top = tops[block, piece]
        if not top > -math.inf or _bin(top) < first:  # the bin is monotone in x
            continue
        for sub in range(at, min(at + _PIECE, stop), _SUB):
            end = min(sub + _SUB, stop)
            hits = 0
            for j in range(sub, end):
                v: float = np.float64(new[j])
                if old is not None:
                    v -= np.float64(old[j])
                if mask is not None:
                    hits += (v >= edge) & mask[j]
                else:
                    hits += v >= edge
            if hits == 0:
                continue
            for j in range(sub, end):
                v = np.float64(new[j])
                if old is not None:
                    v -= np.float64(old[j])
                if abs(v) < math.inf and (mask is None or mask[j]) and _bin(v) >= first:
                    out[found] = v
                    found += 1
    return found


@numba.njit(cache=True, nogil=True, parallel=True)  # type: ignore[untyped-decorator]
def _collect_parallel(arrays: tuple[Any, Any, Any, Any], tops: Any, first: int, need: int) -> Any:
    """``_collect`` for every block, in parallel; (candidates per block, their counts)."""
    new, old, mask, _ = arrays
    blocks = tops.shape[0]
    out = np.empty((blocks, need))
    counts = np.zeros(blocks, dtype=np.int64)
    for block in numba.prange(blocks):
        counts[block] = _collect(new, old, mask, block, tops, first, out[block])
    return out, counts


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _collect_serial(arrays: tuple[Any, Any, Any, Any], tops: Any, first: int, need: int) -> Any:
    """``_collect`` for every block, on the calling thread."""
    new, old, mask, _ = arrays
    blocks = tops.shape[0]
    out = np.empty((blocks, need))
    counts = np.zeros(blocks, dtype=np.int64)
    for block in range(blocks):
        counts[block] = _collect(new, old, mask, block, tops, first, out[block])
    return out, counts
