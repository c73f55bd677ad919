"""torch reduction of log-ratios, on the device that holds them.

``reduce_device`` sends CUDA tensors to the fused Triton kernel (``stats_triton``); the eager ops
here are for other devices, and for CUDA where Triton is missing or fails.

Moving a 64M-token step to the host would cost more than the training step's own transfer budget,
so everything is reduced where the tensors live and the host receives one small tensor (scalar rows,
sketch bins and per-row sums concatenated) in a single transfer. Nothing here branches on device
data; the only waits before that transfer are ``torch.bincount`` sizing its output (one per chunk
of 4M tokens), kept because it is exact and deterministic where the scatter alternatives are not.

The arithmetic mirrors ``stats_numpy`` (float64, the same sketch binning), so both backends give the
same numbers up to summation order.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ratiowatch.khat import top_torch
from ratiowatch.sketch import INV_LN_GAMMA, KEY_OFFSET, MAX_KEY, NUM_BINS
from ratiowatch.stats import EMPTY_SCALARS, SCALAR_FIELDS
from ratiowatch.stats_numpy import Chunk, chunk_indices

__all__ = ["reduce_device", "reduce_torch"]

# Elements per chunk: bounds the float64 temporaries (a few times 8 bytes per element) on a GPU
# that is busy training, while keeping kernel launches few; on CPU, sized for the cache instead.
_DEVICE_CHUNK = 1 << 22
_CPU_CHUNK = 1 << 16

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]

logger = logging.getLogger("ratiowatch")
_triton = {"usable": True}  # cleared for the process once the Triton kernel failed


def reduce_device(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> tuple[Float64Array, Int64Array, Float64Array, Int64Array, Float64Array]:
    """``reduce_cpu``'s results (with the k-hat tail) for tensors on any torch device.

    CUDA tensors go to the fused Triton kernel (``stats_triton``) where Triton imports and
    compiles; anything else, or a failure there (logged once), to the eager ops of this module.
    """
    if new.device.type == "cuda" and _triton["usable"]:
        try:
            from ratiowatch.stats_triton import reduce_triton

            return reduce_triton(new, old, mask, advantages, low, high)
        except Exception:  # ImportError, or a compiler that rejects the kernel on this GPU
            _triton["usable"] = False
            logger.warning(
                "ratiowatch: the Triton statistics kernel is unavailable; using torch ops",
                exc_info=True,
            )
    return (*reduce_torch(new, old, mask, advantages, low, high), top_torch(new, old, mask))


def reduce_torch(
    new: Any, old: Any, mask: Any, advantages: Any, low: float, high: float
) -> tuple[Float64Array, Int64Array, Float64Array, Int64Array]:
    """(scalar rows, sketch bins, per-row sums, per-row counts) of x = new - old (or new)."""
    import torch

    shape = tuple(new.shape)
    device = new.device
    rows = shape[0] if len(shape) == 2 else 0
    seq_sum = torch.zeros(rows, dtype=torch.float64, device=device)
    seq_count = torch.zeros(rows, dtype=torch.float64, device=device)
    bins = torch.zeros(NUM_BINS, dtype=torch.int64, device=device)
    table = []
    chunk = _CPU_CHUNK if device.type == "cpu" else _DEVICE_CHUNK
    for index in chunk_indices(shape, chunk):
        x = new[index].reshape(-1).to(torch.float64)
        if old is not None:
            x = x - old[index].reshape(-1).to(torch.float64)
        valid = torch.isfinite(x)
        masked: Any = x.numel()
        if mask is not None:
            chunk_mask = mask[index].reshape(-1)
            masked = chunk_mask.sum()
            valid &= chunk_mask
        x = torch.where(valid, x, 0.0)  # neutral for every sum, as in stats_numpy
        scalars = _chunk_scalars(x, valid, masked, (low, high))
        if advantages is not None:
            _clip_active(x, _chunk_advantages(advantages, shape, index), scalars, (low, high))
        keys = torch.ceil(x * INV_LN_GAMMA).clamp_(KEY_OFFSET, MAX_KEY + 1).sub_(KEY_OFFSET)
        bins += torch.bincount(keys.long(), minlength=NUM_BINS)
        bins[-KEY_OFFSET] -= x.numel() - scalars["count"]
        table.append(torch.stack([scalars[name].to(torch.float64) for name in SCALAR_FIELDS]))
        if rows:
            row = index[0]
            if isinstance(row, slice):  # whole rows
                seq_sum[row] = x.view(-1, shape[1]).sum(dim=1)
                seq_count[row] = valid.view(-1, shape[1]).sum(dim=1).to(torch.float64)
            else:  # a piece of one long row
                seq_sum[row] += scalars["sum_x"]
                seq_count[row] += scalars["count"]
    # a step without tokens has no chunk: it is one empty row, as on the host
    scalar_rows = torch.stack(table) if table else torch.from_numpy(EMPTY_SCALARS[None, :])
    host = (
        torch.cat([scalar_rows.to(device).reshape(-1), bins.to(torch.float64), seq_sum, seq_count])
        .cpu()
        .numpy()
    )
    cut = scalar_rows.numel()
    return (
        host[:cut].reshape(-1, len(SCALAR_FIELDS)),
        host[cut : cut + NUM_BINS].astype(np.int64),
        host[cut + NUM_BINS : cut + NUM_BINS + rows],
        host[cut + NUM_BINS + rows :].astype(np.int64),
    )


def _chunk_scalars(
    x: Any, valid: Any, masked: Any, thresholds: tuple[float, float]
) -> dict[str, Any]:
    """Scalar statistics of one chunk as 0-d device tensors, keyed by ``SCALAR_FIELDS`` name."""
    import torch

    count = valid.sum()
    inf = x.new_full((), math.inf)  # a fill on the device, not a host-to-device copy
    top = torch.where(valid, x, -inf).amax()
    shift = torch.where(count > 0, top, 0.0)  # an empty chunk's top is -inf
    r = torch.where(valid, torch.exp(x - shift), 0.0)
    e = torch.expm1(x)
    low, high = thresholds
    return {
        "count": count,
        "nonfinite": masked - count,
        "max_x": top,
        "min_x": torch.where(valid, x, inf).amin(),
        "sum_r": r.sum(),
        "sum_r2": torch.dot(r, r),
        "sum_e": e.sum(),
        "sum_e2": torch.dot(e, e),
        "sum_x": x.sum(),
        "sum_x2": torch.dot(x, x),
        "clip_low": (x < low).sum(),
        "clip_high": (x > high).sum(),
        "clip_active": torch.zeros((), device=x.device),
        "adv_count": torch.zeros((), device=x.device),
    }


def _clip_active(
    x: Any, advantages: Any, scalars: dict[str, Any], thresholds: tuple[float, float]
) -> None:
    low, high = thresholds
    active = ((x > high) & (advantages > 0)) | ((x < low) & (advantages < 0))
    scalars["clip_active"] = active.sum()
    scalars["adv_count"] = scalars["count"]


def _chunk_advantages(advantages: Any, shape: tuple[int, ...], index: Chunk) -> Any:
    """Per-token advantages of a chunk, broadcasting per-sequence advantages over the row."""
    if tuple(advantages.shape) == shape:
        return advantages[index].reshape(-1)
    row = index[0]
    if isinstance(row, slice):
        return advantages[row].repeat_interleave(shape[1])
    return advantages[row].expand(len(range(*index[1].indices(shape[1]))))
