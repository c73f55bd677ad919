"""One thread's fused pass over its share of a step's tokens, for ``stats_numba``.

Every token is read once: x, its validity, all sums, the clip counts, the per-row sums and the
sketch bin are computed in one vectorised loop over a cache-sized piece, and the bins are then
counted into the thread's own histogram.

The k-hat tail (``khat.top_numpy``'s result) is screened from each piece's x while they are
still in the CPU cache: the thread keeps the valid x above a bar that rises to its
``TAIL_SIZE``-th largest so far. The screen rides on the loop that counts the bins: x above the
bar has a bin at least the bar's, so most tokens cost that loop one well-predicted branch.

Two numba limits shape the loop (see ``numba_math``): it cannot vectorise ``math.expm1`` (a libm
call per token), so expm1 is evaluated inline; nor a float max/min reduction, so the extremes are
reduced as order-preserving integer keys of the float bits. Rare pieces the loop cannot finish
(a hidden extreme, a mean ratio below 0.25, ratios beyond 1e130, or beyond 1e38 or below 1e-38
for their bins) are redone by scalar loops: the loop itself clamps nothing.
``benchmarks/ablate_numba.py`` times the loop with parts of it removed.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from ratiowatch.khat import TAIL_SIZE
from ratiowatch.numba_math import (
    EXPM1_MAX_X,
    ZERO_KEY,
    bits_as_float,
    expm1,
    float_as_bits,
    key_value,
    order_key,
)
from ratiowatch.sketch import INV_LN_GAMMA, KEY_OFFSET, MAX_KEY, NUM_BINS
from ratiowatch.stats import SCALAR_FIELDS

__all__ = ["TAIL_CAPACITY", "reduce_block"]

# Tokens per piece: their slots and x (64 KiB) stay in L2 until counted. A piece costs a call, the
# vector loop's setup and its reductions: 4,096 tokens took 5-10% less time than 1,024
# (docs/benchmarks.md).
_PIECE = 4096
# Tail candidates a thread holds before it keeps only the TAIL_SIZE largest (and raises its bar);
# ties with the bar are not candidates, so a step of equal x fills the buffer once.
_TAIL_HELD = 2 * TAIL_SIZE
TAIL_CAPACITY = _TAIL_HELD + _PIECE  # a thread's tail buffer: one piece beyond _TAIL_HELD
# Each thread counts into 4 histograms in turn: consecutive tokens often share a bin, and one
# histogram would chain every increment on the previous store to the same address. Each holds
# the invalid tokens' slot, then the NUM_BINS dense bins.
_WAYS = 4
_WAY_SIZE = NUM_BINS + 1
# As in stats_numpy: sum_r and sum_r2 are derived from sum_e and sum_e2 when that is exact enough.
_DERIVE_MAX_X = 300.0
_DERIVE_MIN_MEAN_R = 0.25
# Float reductions may be reordered (vectorised); nothing else is relaxed, so NaN/Inf tests and the
# bin arithmetic (a product, then ceil) stay IEEE-exact.
_FAST = {"reassoc", "contract"}

_COUNT, _NONFINITE, _MAX_X, _MIN_X, _SUM_R, _SUM_R2 = (
    SCALAR_FIELDS.index(name)
    for name in ("count", "nonfinite", "max_x", "min_x", "sum_r", "sum_r2")
)
# Per piece, _segment adds to two small accumulators: ``counts`` (these SCALAR_FIELDS counts, then
# the order keys of the largest and smallest x) and ``sums`` (these float fields).
_COUNTED = tuple(SCALAR_FIELDS.index(name) for name in ("clip_low", "clip_high", "clip_active"))
_SUMMED = tuple(SCALAR_FIELDS.index(name) for name in ("sum_x", "sum_x2", "sum_e", "sum_e2"))
_MASKED, _VALID, _TOP, _BOTTOM = 3, 4, 5, 6  # counts[:3] are the _COUNTED fields
_NUM_FIELDS = len(SCALAR_FIELDS)
_ZERO_BIN = -KEY_OFFSET  # dense bin of x = 0
_KEY_LOW = float(KEY_OFFSET)
_KEY_HIGH = float(MAX_KEY + 1)
# Slots are sketch keys ceil(x / ln(gamma)), not dense bins: a histogram index is then the slot
# plus a constant, which the count loop's addressing absorbs. Invalid tokens get the key below
# the lowest: they are counted apart, and no bar admits them to the tail.
_INVALID_SLOT = KEY_OFFSET - 1


@numba.njit(inline="always", cache=True, fastmath=_FAST)  # type: ignore[untyped-decorator]
def _bin(x: float) -> int:
    """Dense sketch bin of x, by exactly the float64 steps of ``sketch.bin_indices``."""
    t = np.ceil(x * INV_LN_GAMMA)
    return int(min(max(t, _KEY_LOW), _KEY_HIGH) - _KEY_LOW)


@numba.njit(inline="always", cache=True, fastmath=_FAST)  # type: ignore[untyped-decorator]
def _slot(x: float) -> int:
    """The sketch key of x, ``_bin(x) + KEY_OFFSET`` for x within the key range (ratios in
    [1e-38, 1e38]); meaningless beyond it, where ``_redo_slots`` recomputes the piece's slots."""
    return int(np.ceil(x * INV_LN_GAMMA))


@numba.njit(inline="always", cache=True, fastmath=_FAST)  # type: ignore[untyped-decorator]
def _in_key_range(low: float, high: float) -> bool:
    """Whether every x in [low, high] has its ``_bin`` without clamping (ceil is monotonic)."""
    lowest, highest = np.ceil(low * INV_LN_GAMMA), np.ceil(high * INV_LN_GAMMA)
    return lowest >= _KEY_LOW and highest <= _KEY_HIGH  # type: ignore[no-any-return]


@numba.njit(cache=True, fastmath=_FAST, nogil=True)  # type: ignore[untyped-decorator]
def _segment(
    new: Any,
    old: Any,
    mask: Any,
    token_adv: Any,
    row_adv: Any,
    row: int,
    span: tuple[int, int],
    thresholds: tuple[float, float],
    slots: Any,
    values: Any,
    counts: Any,
    sums: Any,
) -> tuple[int, float]:
    """Adds tokens ``span`` (within one row) to ``counts``/``sums``; their sketch keys go to
    ``slots`` (``_INVALID_SLOT`` for invalid tokens), their x to ``values``, for the count loop and
    the tail screen to reread from the cache.

    Returns the row's (count, sum of x) over the span. One loop on purpose: splitting it by
    statistic would read the tokens from memory again.
    """
    start, stop = span
    size = stop - start
    # Absent inputs are None, compiled away (runtime flags cost a third more). Slices get new
    # names: reassigning an argument would stop numba pruning its ``is None`` tests, and slicing
    # in a caller (``None if old is None else old[...]``) would make them Optional, checked per
    # token.
    new_part = new[start:stop]
    if old is not None:
        old_part = old[start:stop]
    if mask is not None:
        mask_part = mask[start:stop]
    if token_adv is not None:
        adv_part = token_adv[start:stop]
    if row_adv is not None:
        positive, negative = row_adv[row] > 0, row_adv[row] < 0
    low, high = thresholds
    masked = n = clip_low = clip_high = active = 0
    sum_x = sum_x2 = sum_e = sum_e2 = 0.0
    top, bottom = order_key(-math.inf), order_key(math.inf)
    # The extremes are reduced over x, zeros for invalid tokens included, corrected below.
    for j in range(size):
        v: float = np.float64(new_part[j])  # float() would keep float32 in numba
        if old is not None:
            v -= np.float64(old_part[j])
        keep = abs(v) < math.inf
        if mask is not None:
            keep &= mask_part[j]
            masked += mask_part[j]
        n += keep
        # Zeroed by a bit mask, not a select: LLVM turns a select on the mask into masked loads
        # of the log-probs, which are much slower here.
        x = bits_as_float(float_as_bits(v) & -np.int64(keep))
        sum_x += x
        sum_x2 += x * x
        e = expm1(x)
        sum_e += e
        sum_e2 += e * e
        key = order_key(x)
        top = max(top, key)
        bottom = min(bottom, key)
        below = x < low
        above = x > high
        clip_low += below
        clip_high += above
        if token_adv is not None:
            active += (above & (adv_part[j] > 0)) | (below & (adv_part[j] < 0))
        if row_adv is not None:
            active += (above & positive) | (below & negative)
        slots[j] = _slot(x) if keep else _INVALID_SLOT
        values[j] = x
    if n == 0:
        top, bottom = order_key(-math.inf), order_key(math.inf)
    elif n < size and ZERO_KEY in (top, bottom):  # a zero for an invalid token hid an extreme
        high, low = _rescan(new, old, mask, span, math.inf, False)[:2]
        top, bottom = order_key(high), order_key(low)
    counts[0] += clip_low
    counts[1] += clip_high
    counts[2] += active
    counts[_MASKED] += size if mask is None else masked
    counts[_VALID] += n
    counts[_TOP] = max(counts[_TOP], top)
    counts[_BOTTOM] = min(counts[_BOTTOM], bottom)
    sums[0] += sum_x
    sums[1] += sum_x2
    sums[2] += sum_e
    sums[3] += sum_e2
    return n, sum_x


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _rescan(
    new: Any, old: Any, mask: Any, span: tuple[int, int], shift: float, with_expm1: bool
) -> Any:
    """(max x, min x, sum exp(x - shift), sum exp(2 (x - shift)), sum expm1(x), sum expm1(x)^2)
    over the valid tokens of ``span``: the ratio sums only for a finite shift, the expm1 sums only
    ``with_expm1`` (for pieces beyond the inline expm1's range). For the rare pieces the fused loop
    cannot finish."""
    top, bottom, sum_r, sum_r2, sum_e, sum_e2 = -math.inf, math.inf, 0.0, 0.0, 0.0, 0.0
    for j in range(*span):
        v: float = np.float64(new[j])
        if old is not None:
            v -= np.float64(old[j])
        if abs(v) < math.inf and (mask is None or mask[j]):
            top, bottom = max(top, v), min(bottom, v)
            if shift < math.inf:
                r = math.exp(v - shift)
                sum_r += r
                sum_r2 += r * r
            if with_expm1:
                e = math.expm1(v)
                sum_e += e
                sum_e2 += e * e
    return top, bottom, sum_r, sum_r2, sum_e, sum_e2


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _count_bins(
    hist: Any,
    extent: Any,
    slots: Any,
    x_range: tuple[float, float],
    values: Any,
    tail: Any,
    held: int,
    bar: float,
) -> int:
    """Counts ``slots`` into ``hist``, first zeroing the bins in ``x_range`` not seen before, and
    appends the ``values`` > ``bar`` to ``tail[held:]``; returns the new ``held``.

    ``hist`` is allocated uninitialised and zeroed only over ``extent`` (the bins seen so far,
    always including x = 0): a few hundred bins for a typical step instead of all of them, which
    would cost a small step more than its tokens.

    A value above the bar has a slot at least the bar's, so only those tokens are compared. This
    scalar loop visits every token anyway; the vector loop that the screen had of its own, and
    its copies of whole 64-token blocks, took about a sixth of the kernel's time.
    """
    low, high = x_range
    first = _bin(low) if low < 0.0 else _ZERO_BIN
    last = _bin(high) if high > 0.0 else _ZERO_BIN
    for way in range(_WAYS):
        base = way * _WAY_SIZE + 1
        hist[base + first : base + extent[0]] = 0
        hist[base + extent[1] + 1 : base + last + 1] = 0
    extent[0], extent[1] = min(extent[0], first), max(extent[1], last)
    bar_slot = _bin(bar) + KEY_OFFSET  # the lowest slot of the bar's bin, above _INVALID_SLOT
    for j in range(0, slots.size, _WAYS):  # (the caller pads slots to whole groups of _WAYS)
        for way in range(_WAYS):  # unrolled, so each way's offset is a constant of the addressing
            slot = slots[j + way]
            # an unsigned index spares numba's wraparound of negative ones
            hist[np.uint64(slot - _INVALID_SLOT + way * _WAY_SIZE)] += 1
            if slot >= bar_slot:
                tail[held] = values[j + way]  # stored whether kept or not: no branch to mispredict
                held += values[j + way] > bar
    return held


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _redo_slots(new: Any, old: Any, mask: Any, span: tuple[int, int], slots: Any) -> None:
    """The slots of tokens ``span`` with the clamps of ``_bin``, for the rare pieces with ratios
    beyond the sketch's range (1e-38, 1e38), where the token loop's are meaningless."""
    for j in range(*span):
        v: float = np.float64(new[j])
        if old is not None:
            v -= np.float64(old[j])
        valid = abs(v) < math.inf and (mask is None or mask[j])
        slots[j - span[0]] = _bin(v) + KEY_OFFSET if valid else _INVALID_SLOT


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _add_piece(out: Any, carry: Any, counts: Any, sums: Any, ratio_sums: Any) -> None:
    """Adds a piece to ``out`` (``SCALAR_FIELDS`` layout; rounding errors go to ``carry``).

    ``ratio_sums`` are relative to the piece's max; whichever of the two has the smaller shift is
    rescaled to the larger, as ``stats.combine_scalars`` does.
    """
    n = counts[_VALID]
    out[_NONFINITE] += counts[_MASKED] - n
    if n == 0:
        return
    high, (sum_r, sum_r2) = key_value(counts[_TOP]), ratio_sums
    if high > out[_MAX_X]:
        shrink = math.exp(out[_MAX_X] - high)  # 0 while out is empty (max_x = -inf)
        out[_SUM_R] = out[_SUM_R] * shrink + sum_r
        out[_SUM_R2] = out[_SUM_R2] * shrink * shrink + sum_r2
        out[_MAX_X] = high
    else:
        shrink = math.exp(high - out[_MAX_X])
        out[_SUM_R] += sum_r * shrink
        out[_SUM_R2] += sum_r2 * shrink * shrink
    out[_MIN_X] = min(out[_MIN_X], key_value(counts[_BOTTOM]))
    out[_COUNT] += n
    for i, field in enumerate(_COUNTED):
        out[field] += counts[i]
    # Neumaier summation: thousands of pieces add to each total, and one huge ratio must not
    # swallow all the others (numpy's pairwise sums do not lose them either).
    for i, field in enumerate(_SUMMED):
        before, value = out[field], sums[i]
        out[field] = after = before + value
        if not abs(after) < math.inf:  # an overflowed sum (x > 354) stays inf, never inf - inf
            continue
        if abs(before) >= abs(value):
            carry[field] += (before - after) + value
        else:
            carry[field] += (value - after) + before


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def reduce_block(
    arrays: tuple[Any, Any, Any, Any],
    row_adv: Any,
    width: int,
    span: tuple[int, int],
    thresholds: tuple[float, float],
    out: Any,
    bins: Any,
    seq: tuple[Any, Any],
    tail: Any,
) -> int:
    """One thread's share: tokens ``span``, piece by piece, into its own out, bins, seq and tail
    candidates; returns how many candidates ``tail`` holds."""
    new, old, mask, token_adv = arrays  # None-typed where absent, as _segment's arguments need
    # 64-bit, not 32: narrowing vector stores (vpmovqd) are slow on some CPUs (AMD Zen 4).
    slots = np.empty(_PIECE, dtype=np.int64)
    values = np.empty(_PIECE)
    hist = np.empty(_WAYS * _WAY_SIZE, dtype=np.int64)
    for way in range(_WAYS):
        hist[way * _WAY_SIZE] = 0  # the invalid tokens' slot: counted, never read
        hist[way * _WAY_SIZE + 1 + _ZERO_BIN] = 0
    extent = np.array([_ZERO_BIN, _ZERO_BIN])
    carry = np.zeros(_NUM_FIELDS)
    counts = np.empty(7, dtype=np.int64)
    sums = np.empty(4)
    held, bar = 0, -math.inf
    for start in range(span[0], span[1], _PIECE):
        stop = min(start + _PIECE, span[1])
        counts[:] = 0
        counts[_TOP], counts[_BOTTOM] = order_key(-math.inf), order_key(math.inf)
        sums[:] = 0.0
        at = start
        while at < stop:  # one segment per row the piece touches
            row = at // width
            end = min(stop, (row + 1) * width)
            n, sum_x = _segment(new, old, mask, token_adv, row_adv, row, (at, end), thresholds,
                                slots[at - start : end - start], values[at - start : end - start],
                                counts, sums)  # fmt: skip
            seq[0][row] += sum_x
            seq[1][row] += n
            at = end
        n, top, bottom = counts[_VALID], key_value(counts[_TOP]), key_value(counts[_BOTTOM])
        size = stop - start
        if not _in_key_range(bottom, top):  # (in range without valid tokens: +inf, -inf)
            _redo_slots(new, old, mask, (start, stop), slots)
        padded = -(-size // _WAYS) * _WAYS
        slots[size:padded] = _INVALID_SLOT
        held = _count_bins(hist, extent, slots[:padded], (bottom, top), values[:padded], tail,
                           held, bar)  # fmt: skip
        held, bar = _keep_largest(tail, held, bar)
        expm1_done = bottom >= -EXPM1_MAX_X and top <= EXPM1_MAX_X  # the loop's expm1 range
        if n and expm1_done and top <= _DERIVE_MAX_X and n + sums[2] >= _DERIVE_MIN_MEAN_R * n:
            # sum r = n + sum e, sum r^2 = n + 2 sum e + sum e^2: no cancellation here
            scale = math.exp(-top)
            ratio_sums = ((n + sums[2]) * scale, (n + 2.0 * sums[2] + sums[3]) * scale * scale)
        elif n:
            _, _, sum_r, sum_r2, sum_e, sum_e2 = _rescan(
                new, old, mask, (start, stop), top, not expm1_done
            )
            ratio_sums = (sum_r, sum_r2)
            if not expm1_done:
                sums[2], sums[3] = sum_e, sum_e2
        else:
            ratio_sums = (0.0, 0.0)
        _add_piece(out, carry, counts, sums, ratio_sums)
    for field in _SUMMED:
        out[field] += carry[field]
    for b in range(extent[0], extent[1] + 1):
        bins[b] += hist[b + 1 : _WAYS * _WAY_SIZE : _WAY_SIZE].sum()
    return held


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _keep_largest(tail: Any, held: int, bar: float) -> tuple[int, float]:
    """Past ``_TAIL_HELD`` candidates, keeps the ``TAIL_SIZE`` largest and raises the bar to their
    minimum. Returns (held, bar).

    Each value the bar turns away has at least ``TAIL_SIZE`` kept values at or above it, so the
    ``TAIL_SIZE`` largest of all tokens are always among those kept.
    """
    if held > _TAIL_HELD:
        tail[:TAIL_SIZE] = np.partition(tail[:held], held - TAIL_SIZE)[held - TAIL_SIZE : held]
        held, bar = TAIL_SIZE, tail[:TAIL_SIZE].min()
    return held, bar
