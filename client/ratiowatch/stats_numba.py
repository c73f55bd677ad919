"""Fused single-pass numba reduction of log-ratios (the optional ``[fast]`` extra).

Same contract and same numbers as ``stats_numpy.reduce_numpy`` (sums up to summation order, sketch
bins identical), but every token is read once (``stats_numba_block``). Large steps are split over
numba's threads (``numba.set_num_threads``), each with its own sums, histogram and tail
candidates, combined at the end.

Importing this module imports numba (``stats_numpy.reduce_cpu`` does so on first use). Each dtype
combination is compiled on its first call (seconds, once per machine: cached on disk next to this
file, or under ``NUMBA_CACHE_DIR``), so the first step a trainer logs pays it.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from ratiowatch.khat import merge_tails
from ratiowatch.numba_pool import POOL
from ratiowatch.sketch import NUM_BINS
from ratiowatch.stats import EMPTY_SCALARS, SCALAR_FIELDS
from ratiowatch.stats_numba_block import TAIL_CAPACITY, reduce_block

__all__ = ["PARALLEL_MIN_TOKENS", "reduce_numba", "reduce_numba_tail"]

# Steps smaller than this run on the calling thread: waking the pool costs more than it saves.
PARALLEL_MIN_TOKENS = 1 << 16
_COUNT, _ADV_COUNT = SCALAR_FIELDS.index("count"), SCALAR_FIELDS.index("adv_count")
_NUM_FIELDS = len(SCALAR_FIELDS)

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]


@numba.njit(cache=True, nogil=True, parallel=True)  # type: ignore[untyped-decorator]
def _reduce_parallel(
    arrays: tuple[Any, Any, Any, Any],
    row_adv: Any,
    width: int,
    thresholds: tuple[float, float],
    blocks: int,
) -> tuple[Any, Any, Any, Any, Any]:
    """``reduce_block`` on ``blocks`` equal shares of the tokens in parallel, outputs added."""
    size = arrays[0].size
    rows = max(1, size // width)
    out = np.empty((blocks, _NUM_FIELDS))
    bins = np.zeros((blocks, NUM_BINS), dtype=np.int64)
    seq_sum = np.zeros((blocks, rows))
    seq_count = np.zeros((blocks, rows), dtype=np.int64)
    tails = np.empty((blocks, TAIL_CAPACITY))
    held = np.zeros(blocks, dtype=np.int64)
    for b in numba.prange(blocks):
        out[b] = EMPTY_SCALARS
        span = (size * b // blocks, size * (b + 1) // blocks)
        held[b] = reduce_block(arrays, row_adv, width, span, thresholds, out[b], bins[b],
                         (seq_sum[b], seq_count[b]), tails[b])  # fmt: skip
    return out, bins.sum(axis=0), seq_sum.sum(axis=0), seq_count.sum(axis=0), (tails, held)


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _reduce_serial(
    arrays: tuple[Any, Any, Any, Any],
    row_adv: Any,
    width: int,
    thresholds: tuple[float, float],
) -> tuple[Any, Any, Any, Any, Any]:
    """``reduce_block`` over every token, on the calling thread."""
    size = arrays[0].size
    rows = max(1, size // width)
    out = EMPTY_SCALARS.copy()
    bins = np.zeros(NUM_BINS, dtype=np.int64)
    seq = (np.zeros(rows), np.zeros(rows, dtype=np.int64))
    tails = np.empty((1, TAIL_CAPACITY))
    held = np.zeros(1, dtype=np.int64)
    held[0] = reduce_block(arrays, row_adv, width, (0, size), thresholds, out, bins, seq, tails[0])
    return out.reshape(1, _NUM_FIELDS), bins, seq[0], seq[1], (tails, held)


@numba.njit(cache=True)  # type: ignore[untyped-decorator]
def _reduce_serial_holding_gil(
    arrays: tuple[Any, Any, Any, Any],
    row_adv: Any,
    width: int,
    thresholds: tuple[float, float],
) -> tuple[Any, Any, Any, Any, Any]:
    """``_reduce_serial`` without releasing the GIL, for small steps (tens of microseconds).

    A trainer thread that releases the GIL must then wait until the thread that took it lets go
    (the sender thread, finalising earlier steps, for up to a 0.5 ms slice); a small step's
    kernel is over sooner than that wait (docs/benchmarks.md).
    """
    return _reduce_serial(arrays, row_adv, width, thresholds)


def reduce_numba(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> tuple[Float64Array, Int64Array, Float64Array, Int64Array]:
    """(scalar rows, sketch bins, per-row sums, per-row counts) of x = new - old (or new).

    The contract of ``stats_numpy.reduce_numpy``, for numpy arrays of validated shapes.
    """
    return reduce_numba_tail(new, old, mask, advantages, low, high)[:4]  # type: ignore[no-any-return]


def reduce_numba_tail(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> Any:
    """``reduce_numba``'s result and, fifth, the k-hat tail: ``khat.top_numpy(new, old, mask)``
    up to order (the contract of ``stats_numpy.reduce_numpy_tail``)."""
    shape = new.shape
    rows = shape[0] if len(shape) == 2 else 0
    size = math.prod(shape)
    if size == 0:
        return (EMPTY_SCALARS[None].copy(), np.zeros(NUM_BINS, dtype=np.int64), np.zeros(rows),
                np.zeros(rows, dtype=np.int64), np.zeros(0))  # fmt: skip
    width = shape[1] if rows else size
    token_adv = row_adv = None
    if advantages is not None and advantages.shape == shape:
        token_adv = _flat_floats(advantages)
    elif advantages is not None:
        row_adv = np.asarray(advantages, dtype=np.float64)
    arrays = (
        _flat_floats(new),
        None if old is None else _flat_floats(old),
        None if mask is None else np.ascontiguousarray(mask).reshape(-1),
        token_adv,
    )
    operands = (arrays, row_adv, width, (low, high))
    threads = numba.get_num_threads() if size >= PARALLEL_MIN_TOKENS else 1
    if threads > 1 and POOL.acquire():
        try:
            table, bins, seq_sum, seq_count, (tails, held) = _reduce_parallel(*operands, threads)
        finally:
            POOL.release()
    elif size >= PARALLEL_MIN_TOKENS:
        table, bins, seq_sum, seq_count, (tails, held) = _reduce_serial(*operands)
    else:
        table, bins, seq_sum, seq_count, (tails, held) = _reduce_serial_holding_gil(*operands)
    if advantages is not None:
        table[:, _ADV_COUNT] = table[:, _COUNT]
    if not rows:
        seq_sum, seq_count = np.zeros(0), np.zeros(0, dtype=np.int64)
    tail = merge_tails(*(tails[b, :count] for b, count in enumerate(held.tolist())))
    return table, bins, seq_sum, seq_count, tail


def _flat_floats(values: Any) -> Any:
    """A 1-D C-contiguous float32/float64 view (a copy only for other layouts or dtypes)."""
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)  # float16 and integers widen exactly
    return np.ascontiguousarray(values).reshape(-1)
