"""Fused Triton reduction of log-ratios on a CUDA GPU: the tokens are read once, by one kernel.

``stats_torch`` reduces with eager torch ops: some thirty kernels per chunk, each reading and
writing float64 temporaries, and a ``bincount`` that waits for the GPU. On an H100 that cost 45x
the read floor, five times what a trainer's own inline statistics cost (docs/benchmarks.md). Here
each program keeps its sums in float64 registers and counts the sketch bins with atomic adds; the
k-hat tail is then copied out by a second, small kernel from the bins that the counts point to.
(``tl.histogram`` would count in shared memory, but with Triton 3.6, torch 2.11's, a kernel using
it for 8,752 bins did not finish compiling in nine minutes.)

Triton comes with torch's CUDA builds; where it is missing, or fails to compile, ``stats_torch``
runs instead. The arithmetic is ``stats_numpy``'s (float64, ``sketch.bin_indices``'s binning), so
the sketch bins agree exactly and the sums up to summation order.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import triton
import triton.language as tl

from ratiowatch.expm1_poly import EXPM1_MAX_X, EXPM1_MIN_X, LN2_HI, LN2_LO, LOG2E, Q
from ratiowatch.khat import TAIL_SIZE, merge_tails, top_torch
from ratiowatch.sketch import INV_LN_GAMMA, KEY_OFFSET, MAX_KEY, NUM_BINS
from ratiowatch.stats import EMPTY_SCALARS, SCALAR_FIELDS

__all__ = ["reduce_triton"]

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]

_TILE = 4096  # tokens per loop iteration of a program: 16 per thread with 8 warps
_PROGRAMS_PER_SM = 4
_MAX_CANDIDATES = 1 << 22  # tail candidates copied out before falling back to torch.topk

# What the kernel reads of other modules must be a constexpr for Triton.
_FIELDS = tl.constexpr(len(SCALAR_FIELDS))
_BINS = tl.constexpr(NUM_BINS)
# Copies of the bin counts, a token counted in the copy of its group of 4 columns (so the lanes and
# warps of a program use different copies): the ratios of a healthy step share a few bins, whose
# atomic adds would otherwise queue on a few addresses. On an H100, 128 copies took a third less
# time than 32 and a fifth of one copy's (docs/benchmarks.md).
_COPIES = tl.constexpr(128)
_INV_LN_GAMMA = tl.constexpr(INV_LN_GAMMA)
_KEY_LOW = tl.constexpr(float(KEY_OFFSET))
_KEY_HIGH = tl.constexpr(float(MAX_KEY + 1))
_INF = tl.constexpr(math.inf)
_EXPM1_MIN_X, _EXPM1_MAX_X = tl.constexpr(EXPM1_MIN_X), tl.constexpr(EXPM1_MAX_X)
_LOG2E, _LN2_HI, _LN2_LO = tl.constexpr(LOG2E), tl.constexpr(LN2_HI), tl.constexpr(LN2_LO)
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9 = (tl.constexpr(q) for q in Q)


@triton.jit
def _expm1(x):
    """expm1 of float64 x by ``expm1_poly``'s polynomial: libdevice's is not available in the
    Triton interpreter, which tests the kernel on machines without a GPU."""
    clamped = tl.minimum(tl.maximum(x, _EXPM1_MIN_X), _EXPM1_MAX_X)
    k = tl.floor(clamped * _LOG2E + 0.5)
    r = (clamped - k * _LN2_HI) - k * _LN2_LO
    q = _Q9 * r + _Q8
    q = q * r + _Q7
    q = q * r + _Q6
    q = q * r + _Q5
    q = q * r + _Q4
    q = q * r + _Q3
    q = q * r + _Q2
    q = q * r + _Q1
    q = q * r + _Q0
    p = r + r * r * q
    scale = ((k.to(tl.int64) + 1023) << 52).to(tl.float64, bitcast=True)
    within = scale * p + (scale - 1.0)
    return tl.where(x > _EXPM1_MAX_X, tl.exp(x), within)  # there expm1(x) = exp(x)


@triton.jit
def _logratios(new_ptr, old_ptr, mask_ptr, offsets, inside, HAS_OLD, HAS_MASK):
    """(x, valid, taken) of the tokens at ``offsets``: x in float64, 0 where not valid; taken =
    inside and masked in; valid = taken and finite."""
    x = tl.load(new_ptr + offsets, mask=inside, other=0).to(tl.float64)
    if HAS_OLD:
        x -= tl.load(old_ptr + offsets, mask=inside, other=0).to(tl.float64)
    taken = inside
    if HAS_MASK:
        taken &= tl.load(mask_ptr + offsets, mask=inside, other=0) != 0
    valid = taken & (tl.abs(x) < _INF)  # False for NaN too
    return tl.where(valid, x, 0.0), valid, taken


@triton.jit
def _bin(x):
    """``sketch.bin_indices`` of x, in the same float64 arithmetic."""
    key = tl.ceil(x * _INV_LN_GAMMA)
    return (tl.minimum(tl.maximum(key, _KEY_LOW), _KEY_HIGH) - _KEY_LOW).to(tl.int32)


@triton.jit
def _reduce_kernel(
    new_ptr,
    old_ptr,
    mask_ptr,
    adv_ptr,
    out_ptr,
    hist_ptr,
    rows,
    width,
    row_blocks,
    programs_r,
    splits,
    tiles_per_program,
    low,
    high,
    seq_at,
    HAS_OLD: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ADVANTAGES: tl.constexpr,  # 0: none, 1: per token, 2: per row
    WITH_ROWS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program: row blocks pid_r, pid_r + programs_r, ... over the columns of its split.

    Writes its ``SCALAR_FIELDS`` row at ``out[program * FIELDS]`` (sums of r relative to its own
    max_x, as each chunk row of the host kernels), adds its bin counts to ``hist`` and, for
    2-D input, its per-row sums and counts at ``out[seq_at]`` as [2, splits, rows].
    """
    pid_r = tl.program_id(0)
    split = tl.program_id(1)
    r_lane = tl.arange(0, BLOCK_R)
    c_lane = tl.arange(0, BLOCK_C)
    col_start = split * tiles_per_program * BLOCK_C
    col_stop = tl.minimum(col_start + tiles_per_program * BLOCK_C, width)

    taken = tl.zeros((), tl.float64)
    count = tl.zeros((), tl.float64)
    top = tl.full((), -_INF, tl.float64)
    bottom = tl.full((), _INF, tl.float64)
    sum_r = tl.zeros((), tl.float64)
    sum_r2 = tl.zeros((), tl.float64)
    sum_e = tl.zeros((), tl.float64)
    sum_e2 = tl.zeros((), tl.float64)
    sum_x = tl.zeros((), tl.float64)
    sum_x2 = tl.zeros((), tl.float64)
    clip_low = tl.zeros((), tl.float64)
    clip_high = tl.zeros((), tl.float64)
    clip_active = tl.zeros((), tl.float64)
    # Fixed trip counts (every program runs the longest's, masked past the end): the Triton
    # interpreter, which tests use on machines without a GPU, cannot loop over program ids.
    for block_step in range(0, tl.cdiv(row_blocks, programs_r)):
        r = (pid_r + block_step * programs_r) * BLOCK_R + r_lane
        row_in = r < rows
        base = r.to(tl.int64) * width
        row_sum = tl.zeros((BLOCK_R,), tl.float64)
        row_count = tl.zeros((BLOCK_R,), tl.float64)
        if ADVANTAGES == 2:
            row_adv = tl.load(adv_ptr + r, mask=row_in, other=0).to(tl.float64)
        for tile in range(0, tiles_per_program):
            c = col_start + tile * BLOCK_C + c_lane
            inside = row_in[:, None] & (c < col_stop)[None, :]
            offsets = base[:, None] + c[None, :]
            x, valid, inside = _logratios(
                new_ptr, old_ptr, mask_ptr, offsets, inside, HAS_OLD, HAS_MASK
            )
            taken += tl.sum(inside.to(tl.int32)).to(tl.float64)
            count += tl.sum(valid.to(tl.int32)).to(tl.float64)

            tile_top = tl.max(tl.where(valid, x, -_INF))
            new_top = tl.maximum(top, tile_top)
            shift = tl.where(new_top == -_INF, 0.0, new_top)
            rescale = tl.exp(top - shift)  # 0 while nothing was seen
            ratio = tl.where(valid, tl.exp(x - shift), 0.0)
            sum_r = sum_r * rescale + tl.sum(ratio)
            sum_r2 = sum_r2 * rescale * rescale + tl.sum(ratio * ratio)
            top = new_top
            bottom = tl.minimum(bottom, tl.min(tl.where(valid, x, _INF)))

            e = _expm1(x)
            sum_e += tl.sum(e)
            sum_e2 += tl.sum(e * e)
            sum_x += tl.sum(x)
            sum_x2 += tl.sum(x * x)
            below = valid & (x < low)
            above = valid & (x > high)
            clip_low += tl.sum(below.to(tl.int32)).to(tl.float64)
            clip_high += tl.sum(above.to(tl.int32)).to(tl.float64)
            if ADVANTAGES != 0:
                if ADVANTAGES == 1:
                    adv = tl.load(adv_ptr + offsets, mask=inside, other=0).to(tl.float64)
                else:
                    adv = row_adv[:, None]
                active = (above & (adv > 0)) | (below & (adv < 0))
                clip_active += tl.sum(active.to(tl.int32)).to(tl.float64)

            slot = (c_lane // 4 % _COPIES * _BINS)[None, :] + _bin(x)
            tl.atomic_add(hist_ptr + slot, 1, mask=valid, sem="relaxed")
            if WITH_ROWS:
                row_sum += tl.sum(x, axis=1)
                row_count += tl.sum(valid.to(tl.int32), axis=1).to(tl.float64)
        if WITH_ROWS:
            at = seq_at + split * rows + r
            tl.store(out_ptr + at, row_sum, mask=row_in)
            tl.store(out_ptr + at + splits * rows, row_count, mask=row_in)

    table = out_ptr + (split * programs_r + pid_r) * _FIELDS  # in SCALAR_FIELDS order
    tl.store(table + 0, count)
    tl.store(table + 1, taken - count)
    tl.store(table + 2, top)
    tl.store(table + 3, bottom)
    tl.store(table + 4, sum_r)
    tl.store(table + 5, sum_r2)
    tl.store(table + 6, sum_e)
    tl.store(table + 7, sum_e2)
    tl.store(table + 8, sum_x)
    tl.store(table + 9, sum_x2)
    tl.store(table + 10, clip_low)
    tl.store(table + 11, clip_high)
    tl.store(table + 12, clip_active)
    tl.store(table + 13, count if ADVANTAGES != 0 else 0.0)


@triton.jit
def _tail_kernel(
    new_ptr,
    old_ptr,
    mask_ptr,
    out_ptr,
    counter_ptr,
    capacity,
    tokens,
    bar,
    HAS_OLD: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Copies the valid x whose bin is at least ``bar`` to ``out``, in any order (the host counted
    ``capacity`` of them in the sketch; the bound only guards against a miscount)."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x, valid, _ = _logratios(
        new_ptr, old_ptr, mask_ptr, offsets, offsets < tokens, HAS_OLD, HAS_MASK
    )
    chosen = valid & (_bin(x) >= bar)
    found = tl.sum(chosen.to(tl.int32))
    if found > 0:
        start = tl.atomic_add(counter_ptr, found, sem="relaxed")
        position = start + tl.cumsum(chosen.to(tl.int32), 0) - 1
        tl.store(out_ptr + position, x, mask=chosen & (position < capacity))


def reduce_triton(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> tuple[Float64Array, Int64Array, Float64Array, Int64Array, Float64Array]:
    """(scalar rows, sketch bins, per-row sums, per-row counts, k-hat tail) of x = new - old (or
    new): ``reduce_cpu``'s results, for tensors on a CUDA device."""
    shape = tuple(new.shape)
    with_rows = len(shape) == 2
    rows, width = shape if with_rows else (1, shape[0])
    seq_rows = rows if with_rows else 0
    if rows * width == 0:
        return (
            EMPTY_SCALARS[None, :].copy(),
            np.zeros(NUM_BINS, dtype=np.int64),
            np.zeros(seq_rows),
            np.zeros(seq_rows, dtype=np.int64),
            np.zeros(0),
        )
    # the kernels' operands: contiguous, the mask as bytes, ``new`` standing in for what is absent
    flags = {"HAS_OLD": old is not None, "HAS_MASK": mask is not None}
    operands = [
        new.contiguous(),
        new if old is None else old.contiguous(),
        new if mask is None else mask.contiguous().view(torch.uint8),
    ]
    block_c = min(triton.next_power_of_2(width), _TILE)
    block_r = min(triton.next_power_of_2(rows), _TILE // block_c)
    row_blocks = triton.cdiv(rows, block_r)
    col_tiles = triton.cdiv(width, block_c)
    target = _PROGRAMS_PER_SM * _multiprocessors(new.device)
    programs_r = min(row_blocks, target)
    tiles_per_program = triton.cdiv(col_tiles, max(1, target // programs_r))
    splits = triton.cdiv(col_tiles, tiles_per_program)
    programs = programs_r * splits
    bins_at = programs * len(SCALAR_FIELDS)
    seq_at = bins_at + NUM_BINS
    out = torch.zeros(seq_at + 2 * splits * seq_rows, dtype=torch.float64, device=new.device)
    hist = torch.zeros((_COPIES.value, NUM_BINS), dtype=torch.int32, device=new.device)
    _reduce_kernel[(programs_r, splits)](
        *operands,
        new if advantages is None else advantages.contiguous(),
        out,
        hist,
        rows,
        width,
        row_blocks,
        programs_r,
        splits,
        tiles_per_program,
        low,
        high,
        seq_at,
        ADVANTAGES=0 if advantages is None else 1 if tuple(advantages.shape) == shape else 2,
        WITH_ROWS=with_rows,
        BLOCK_R=block_r,
        BLOCK_C=block_c,
        num_warps=8,
        **flags,
    )
    torch.sum(hist, dim=0, dtype=torch.float64, out=out[bins_at:seq_at])
    host = out.cpu().numpy()
    bins = host[bins_at:seq_at].astype(np.int64)
    per_row = host[seq_at:].reshape(2, splits, seq_rows).sum(axis=1)
    tail = _tail(operands, bins, flags)
    if tail is None:
        tail = top_torch(new, old, mask)
    return host[:bins_at].reshape(programs, -1), bins, per_row[0], per_row[1].astype(np.int64), tail


def _tail(operands: list[Any], bins: Int64Array, flags: dict[str, bool]) -> Float64Array | None:
    """The ``TAIL_SIZE`` largest valid log-ratios, found with the sketch's counts: they lie in the
    highest bins that hold ``TAIL_SIZE`` tokens together, which a second pass copies out.

    A second read of the inputs, against ``torch.topk`` per chunk (docs/benchmarks.md). Ties
    can crowd those bins (a step whose ratios are all 1.0): past ``_MAX_CANDIDATES`` tokens this
    gives None, and the caller uses ``top_torch``.
    """
    at_or_above = np.cumsum(bins[::-1])[::-1]
    wanted = min(TAIL_SIZE, int(at_or_above[0]))
    if wanted == 0:
        return np.zeros(0)
    bar = int(np.flatnonzero(at_or_above >= wanted)[-1])
    if at_or_above[bar] > _MAX_CANDIDATES:
        return None
    capacity = int(at_or_above[bar])
    device = operands[0].device
    out = torch.empty(capacity, dtype=torch.float64, device=device)
    counter = torch.zeros(1, dtype=torch.int32, device=device)
    tokens = operands[0].numel()
    _tail_kernel[(triton.cdiv(tokens, _TILE),)](
        *operands, out, counter, capacity, tokens, bar, BLOCK=_TILE, num_warps=8, **flags
    )
    return merge_tails(out.cpu().numpy())


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":  # the Triton interpreter, in tests on machines without a GPU
        return 1
    return int(torch.cuda.get_device_properties(device).multi_processor_count)
