"""numpy reduction of log-ratios to scalar rows, sketch bins and per-sequence sums.

``reduce_cpu`` is the host entry point: it hands the work, k-hat tail included, to the fused numba
kernel (``stats_numba``) when the ``[fast]`` extra is installed, and to ``reduce_numpy_tail``
otherwise.

Tokens are processed in chunks small enough that the handful of float64 temporaries stay in the
CPU cache, so a 64M-token step costs a few passes over cached data instead of a few dozen passes
over memory, and never allocates a full-size float64 copy. The k-hat tail is screened from the
same cached chunks. Large steps are split into bands of rows, one per core.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from ratiowatch.khat import TailScreen, merge_tails
from ratiowatch.sketch import KEY_OFFSET, NUM_BINS, bin_index, bin_indices
from ratiowatch.stats import EMPTY_SCALARS, SCALAR_FIELDS

__all__ = ["chunk_indices", "reduce_cpu", "reduce_numpy", "reduce_numpy_tail"]

# Tokens per chunk: 1 MiB per float64 buffer, within L2 or L3. Each chunk costs some 25 ufunc
# calls' Python overhead, so smaller chunks, though closer to L1, cost more (docs/benchmarks.md).
_CHUNK = 1 << 17
# Below this many tokens per thread, handing work to another thread costs more than it saves.
_TOKENS_PER_THREAD = 1 << 20
_MAX_THREADS = 8
_EMPTY = dict(zip(SCALAR_FIELDS, EMPTY_SCALARS.tolist(), strict=True))
# sum_r and sum_r2 are derived from sum_e and sum_e2 (saving an exp pass) when that loses at most
# a few ulps: when the mean ratio is not tiny, and nothing is close to overflowing expm1(x)**2.
_DERIVE_MAX_X = 300.0
_DERIVE_MIN_MEAN_R = 0.25

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Chunk = tuple[Any, ...]
Scalars = dict[str, Any]  # SCALAR_FIELDS name -> number
Reduction = tuple[Float64Array, Int64Array, Float64Array, Int64Array]
TailReduction = tuple[Float64Array, Int64Array, Float64Array, Int64Array, Float64Array]
Reducer = Callable[[Any, Any, Any, Any, float, float], TailReduction]


def reduce_cpu(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> TailReduction:
    """``reduce_numpy_tail``'s result, from the numba kernel when numba is importable.

    The first call with numba imports it (about 0.2 s) and loads or compiles the kernel for these
    dtypes (a few seconds the first time on a machine, then cached on disk).
    """
    return fast_reducer()(new, old, mask, advantages, low, high)


@functools.cache
def fast_reducer() -> Reducer:
    """The fastest host kernel installed: ``stats_numba.reduce_numba_tail``, else
    ``reduce_numpy_tail``."""
    try:
        from ratiowatch.stats_numba import reduce_numba_tail
    except ImportError:
        return reduce_numpy_tail
    return reduce_numba_tail  # type: ignore[no-any-return]


def reduce_numpy_tail(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> TailReduction:
    """``reduce_numpy``'s result and, fifth, the k-hat tail (``khat.top_numpy``'s, up to order),
    screened from the same cached chunks."""
    return _reduce_rows_in_parallel(new, old, mask, advantages, (low, high), with_tail=True)


def reduce_numpy(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> Reduction:
    """(scalar rows, sketch bins, per-row sums, per-row counts) of x = new - old (or new)."""
    table, bins, seq_sum, seq_count, _ = _reduce_rows_in_parallel(
        new, old, mask, advantages, (low, high), with_tail=False
    )
    return table, bins, seq_sum, seq_count


def _reduce_rows_in_parallel(
    new: Any,
    old: Any,
    mask: Any,
    advantages: Any,
    thresholds: tuple[float, float],
    *,
    with_tail: bool,
) -> TailReduction:
    """``_reduce_chunks`` over bands of rows, one per thread for large steps, then combined.

    numpy releases the GIL inside its elementwise ufuncs (though not in its reductions or in
    ``bincount``), so two threads are 1.2-1.4x as fast as one (docs/benchmarks.md); every
    result part merges exactly (scalar rows stack, bins add, sequences concatenate, tails merge).
    """
    bands = _row_bands(new.shape)
    if len(bands) == 1:
        return _reduce_chunks(new, old, mask, advantages, thresholds, with_tail)

    def band(rows: slice) -> TailReduction:
        new_rows, old_rows, mask_rows, advantages_rows = (
            None if a is None else a[rows] for a in (new, old, mask, advantages)
        )
        return _reduce_chunks(new_rows, old_rows, mask_rows, advantages_rows, thresholds, with_tail)

    parts = _POOL.map(band, bands)
    return (
        np.concatenate([part[0] for part in parts]),
        np.sum([part[1] for part in parts], axis=0),
        np.concatenate([part[2] for part in parts]),
        np.concatenate([part[3] for part in parts]),
        merge_tails(*(part[4] for part in parts)),
    )


def _row_bands(shape: tuple[int, ...]) -> list[slice]:
    """Contiguous row ranges, one per thread, each of at least ``_TOKENS_PER_THREAD`` tokens."""
    size = math.prod(shape)
    threads = min(_POOL.threads, size // _TOKENS_PER_THREAD, shape[0])
    if threads <= 1:
        return [slice(None)]
    edges = np.linspace(0, shape[0], threads + 1).round().astype(int).tolist()
    return [slice(start, stop) for start, stop in itertools.pairwise(edges)]


def _reduce_chunks(
    new: Any,
    old: Any,
    mask: Any,
    advantages: Any,
    thresholds: tuple[float, float],
    with_tail: bool,
) -> TailReduction:
    """The whole reduction of one band of rows, chunk by cache-sized chunk."""
    shape = new.shape
    rows = shape[0] if len(shape) == 2 else 0
    seq_sum = np.zeros(rows)
    seq_count = np.zeros(rows, dtype=np.int64)
    bins = np.zeros(NUM_BINS, dtype=np.int64)
    table = []
    screen = TailScreen(np.float64, 0.0) if with_tail else None
    workspace = _Workspace(min(_CHUNK, max(1, math.prod(shape))))
    # expm1 and the squares overflow to inf for huge log-ratios, by design (see stats.py)
    with np.errstate(over="ignore", invalid="ignore"):
        for index in chunk_indices(shape, _CHUNK):
            x, valid, scalars = _chunk_scalars(
                workspace,
                new[index],
                None if old is None else old[index],
                None if mask is None else mask[index],
                _chunk_advantages(advantages, shape, index),
                thresholds,
                bins,
            )
            table.append([scalars[name] for name in SCALAR_FIELDS])
            if screen is not None and scalars["count"]:
                screen.offer(x, valid)
            if not rows:
                continue
            row = index[0]
            if isinstance(row, slice):  # whole rows
                width = shape[1]
                seq_sum[row] = x.reshape(-1, width).sum(axis=1)
                # summing bytes is twice as fast as count_nonzero along an axis
                per_row = valid.view(np.uint8).reshape(-1, width)
                seq_count[row] = per_row.sum(axis=1, dtype=np.int32)
            else:  # a piece of one long row
                seq_sum[row] += scalars["sum_x"]
                seq_count[row] += int(scalars["count"])
    scalar_rows = np.array(table) if table else EMPTY_SCALARS[None]
    tail = screen.result() if screen is not None else np.zeros(0)
    return scalar_rows, bins, seq_sum, seq_count, tail


class _ThreadPool:
    """A lazily started thread pool, started afresh in a forked child (whose copy has no threads,
    and may hold a lock some other thread held at the fork).

    The calling thread takes the first part itself, so one part costs no hand-off; if the pool
    cannot take work (the interpreter is shutting down), the caller does all of it.
    """

    def __init__(self) -> None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.threads = max(1, min(cpus or 1, _MAX_THREADS))
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()

    def map(
        self, work: Callable[[slice], TailReduction], parts: list[slice]
    ) -> list[TailReduction]:
        if self._pid != os.getpid():
            self._lock, self._executor, self._pid = threading.Lock(), None, os.getpid()
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.threads - 1, thread_name_prefix="ratiowatch-stats"
                )
            executor = self._executor
        try:
            others = [executor.submit(work, part) for part in parts[1:]]
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            return [work(part) for part in parts]
        first = work(parts[0])
        return [first, *(future.result() for future in others)]


_POOL = _ThreadPool()


class _Workspace:
    """Chunk-sized buffers reused across chunks: fresh ones would each cost page faults."""

    def __init__(self, size: int) -> None:
        self.x = np.empty(size)
        self.scratch = np.empty(size)
        self.index = np.empty(size, dtype=np.intp)
        self.valid = np.empty(size, dtype=np.bool_)
        self.above = np.empty(size, dtype=np.bool_)
        self.below = np.empty(size, dtype=np.bool_)
        self.bits = np.empty(size, dtype=np.int64)


def chunk_indices(shape: tuple[int, ...], size: int) -> Iterator[Chunk]:
    """Index tuples covering an array: whole rows where they fit ``size``, else row pieces."""
    if len(shape) == 1:
        for start in range(0, shape[0], size):
            yield (slice(start, start + size),)
        return
    rows, width = shape
    if width == 0:
        return
    if width <= size:
        step = size // width
        for start in range(0, rows, step):
            yield (slice(start, start + step),)
        return
    for row in range(rows):
        for start in range(0, width, size):
            yield (row, slice(start, start + size))


def _chunk_advantages(advantages: Any, shape: tuple[int, ...], index: Chunk) -> Any:
    """Per-token advantages of a chunk, broadcasting per-sequence advantages over the row."""
    if advantages is None:
        return None
    if advantages.shape == shape:
        return advantages[index].ravel()
    row = index[0]
    if isinstance(row, slice):
        return np.repeat(advantages[row], shape[1])
    return np.full(len(range(*index[1].indices(shape[1]))), advantages[row])


def _chunk_scalars(
    ws: _Workspace,
    new: Any,
    old: Any,
    mask: Any,
    advantages: Any,
    thresholds: tuple[float, float],
    bins: Int64Array,
) -> tuple[Float64Array, BoolArray, Scalars]:
    """(x with invalid tokens zeroed, validity, scalar row) of one chunk; adds to ``bins``."""
    size = new.size
    x, valid = ws.x[:size], ws.valid[:size]
    _logratios(ws, new, old, x)
    np.isfinite(x, out=valid)
    masked = size
    if mask is not None:
        mask = mask.ravel()
        masked = np.count_nonzero(mask)
        np.logical_and(valid, mask, out=valid)
    n = int(np.count_nonzero(valid))
    scalars: Scalars = dict(_EMPTY)
    scalars["count"] = n
    scalars["nonfinite"] = masked - n
    if n < size:
        # Zero is neutral for every sum below (expm1(0) = 0) and inside the clip thresholds; its
        # sketch bin and the extremes are corrected explicitly. Clearing the bits with an AND is
        # faster than multiplying by the mask (a bool-to-float cast) or a masked copy.
        bits = ws.bits[:size]
        np.negative(valid.view(np.int8), out=bits)
        np.bitwise_and(x.view(np.int64), bits, out=x.view(np.int64))
    if n == 0:
        return x, valid, scalars
    _extremes(x, valid, size - n, scalars)
    _add_bins(x, n, scalars, ws, bins)
    _moments(x, valid, ws.scratch[:size], n, scalars)
    low, high = thresholds
    above = np.greater(x, high, out=ws.above[:size])
    below = np.less(x, low, out=ws.below[:size])
    scalars["clip_high"] = np.count_nonzero(above)
    scalars["clip_low"] = np.count_nonzero(below)
    if advantages is not None:
        above &= advantages > 0
        below &= advantages < 0
        above |= below
        scalars["clip_active"] = np.count_nonzero(above)
        scalars["adv_count"] = n
    return x, valid, scalars


def _logratios(ws: _Workspace, new: Any, old: Any, x: Float64Array) -> None:
    """x = new - old in float64 (float32 log-probs are widened first: rounding x in float32
    would be amplified by exp). Widening each operand separately, then subtracting like types, is
    faster than numpy's mixed-type subtraction."""
    if old is None:
        np.copyto(x.reshape(new.shape), new)
    elif new.dtype == np.float64 and old.dtype == np.float64:
        np.subtract(new, old, out=x.reshape(new.shape))
    else:
        np.copyto(x.reshape(new.shape), new)
        scratch = ws.scratch[: x.size]
        np.copyto(scratch.reshape(old.shape), old)
        np.subtract(x, scratch, out=x)


def _add_bins(x: Float64Array, n: int, scalars: Scalars, ws: _Workspace, bins: Int64Array) -> None:
    # Counting only the span between the extremes keeps small steps from paying for all bins.
    low, high = scalars["min_x"], scalars["max_x"]
    if n < x.size:  # the zeros standing in for invalid tokens
        low, high = min(low, 0.0), max(high, 0.0)
    first, last = bin_index(low), bin_index(high)
    inside = first > 0 and last < NUM_BINS - 1  # then clipping to the key range is a no-op
    scratch, out = ws.scratch[: x.size], ws.index[: x.size]
    counts = np.bincount(bin_indices(x, first=first, clip=not inside, scratch=scratch, out=out))
    bins[first : first + counts.size] += counts
    bins[-KEY_OFFSET] -= x.size - n


def _extremes(x: Float64Array, valid: BoolArray, invalid: int, scalars: Scalars) -> None:
    top, bottom = x.max(), x.min()
    # The zeros standing in for invalid tokens can only mask an extreme of the wrong sign.
    if invalid and top == 0.0:
        top = np.max(x, where=valid, initial=-math.inf)
    if invalid and bottom == 0.0:
        bottom = np.min(x, where=valid, initial=math.inf)
    scalars["max_x"] = top
    scalars["min_x"] = bottom


def _moments(x: Float64Array, valid: BoolArray, e: Float64Array, n: int, scalars: Scalars) -> None:
    np.expm1(x, out=e)  # overflows to inf past x = 709 (errstate set by reduce_numpy)
    sum_e, sum_e2 = e.sum(), e @ e
    scalars["sum_e"] = sum_e
    scalars["sum_e2"] = sum_e2
    scalars["sum_x"] = x.sum()
    scalars["sum_x2"] = x @ x
    top = scalars["max_x"]
    if top <= _DERIVE_MAX_X and n + sum_e >= _DERIVE_MIN_MEAN_R * n:
        # sum r = n + sum e and sum r^2 = n + 2 sum e + sum e^2, both without cancellation here
        scale = math.exp(-top)
        scalars["sum_r"] = (n + sum_e) * scale
        scalars["sum_r2"] = (n + 2.0 * sum_e + sum_e2) * scale * scale
        return
    np.subtract(x, top, out=e)
    np.exp(e, out=e)
    if n < x.size:
        np.copyto(e, 0.0, where=~valid)
    scalars["sum_r"] = e.sum()
    scalars["sum_r2"] = e @ e
