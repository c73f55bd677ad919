"""Merging each step's statistics across ``torch.distributed`` ranks, so that only rank 0 sends.

Ranks hold different sequences of one global batch, so a step's statistics are those of the union
of their tokens. Every family's partial is merged exactly: sums and sketch counts added, extremes
maxed, per-sequence sums and k-hat tails gathered. Nothing is averaged over ranks (an average of
per-rank quantiles is not a quantile of anything), except user scalars (``train/*``), whose per-rank
means are averaged; the gradient norm is rank 0's, already global once gradients are all-reduced.

Protocol, run by :meth:`RankMerger.merge` on every rank whenever a step closes, in the trainer's
thread (collectives must be issued in the same order on every rank, which the sender thread,
running at its own pace, could not guarantee):

1. ``all_gather_object`` of a small header (two collectives inside torch): the rank's step, for
   each family it has (in ``stats.FAMILIES`` order) its extremes, sequence count and tail length,
   and its user scalars. From the headers every rank derives the same plan: the families present
   on any rank (a rank without one contributes an empty partial), the shift of the ratio sums and
   the sizes of what follows.
2. ``reduce`` (SUM, to rank 0) of one float64 vector: per family, the shifted scalar sums and the
   sketch counts (exact in float64 up to 2**53).
3. ``gather`` (to rank 0) of one float64 vector per rank: per family, per-sequence sums and counts
   and the tail, padded to the longest rank's.

Steps 2 and 3 are skipped, on every rank alike, when no rank has a ratio family. Tensors live on
the backend's device: CPU for gloo (and mixed groups that include gloo), the current CUDA device
for nccl, as for torch's own object collectives.

Every rank must log the same steps and call ``flush``/``close`` at the same points; a rank left
waiting in a collective waits for the process group's timeout. Errors in the local parts are
contained and the rank contributes nothing for that step, still taking part in every collective so
the ranks stay in step. An error inside a collective leaves this rank out of step with the others,
so it is contained, logged once, and this rank stops merging for the rest of the run: rank 0 then
sends its own statistics only (its ``count`` shows the drop). A step still open when the process
group is destroyed cannot be merged any more and is counted as lost.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ratiowatch.guard import Guard
from ratiowatch.sketch import NUM_BINS
from ratiowatch.stats import FAMILIES, SCALAR_FIELDS, FamilyPartial
from ratiowatch.step import ClosedStep

__all__ = ["RankMerger", "initialized_distributed", "process_rank"]

logger = logging.getLogger("ratiowatch")

Float64Array = npt.NDArray[np.float64]
_STRIDE = len(SCALAR_FIELDS) + NUM_BINS  # per family in the reduced vector: scalars, then bins
LOST_AFTER_GROUP = "process group destroyed before the step was merged"


def initialized_distributed() -> Any | None:
    """``torch.distributed`` when the trainer imported torch and initialized a process group.

    Never imports torch: a trainer that has not imported it has no process group.
    """
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None)
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def process_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's global rank: the process group's, else ``RANK`` (set by torchrun), else 0.

    ``init`` uses it to decide whether this process sends; reading ``RANK`` covers the common
    case of ``ratiowatch.init`` running before ``init_process_group``.
    """
    dist = initialized_distributed()
    if dist is not None:
        return int(dist.get_rank())
    value = (os.environ if environ is None else environ).get("RANK", "0")
    return int(value) if value.strip().isdigit() else 0


@dataclass(frozen=True)
class _FamilyHeader:
    with_advantages: bool
    rows: int
    tail: int
    max_x: float
    min_x: float


@dataclass(frozen=True)
class _Header:
    """What one rank tells every other before the reductions (pickled by all_gather_object)."""

    step: int | None = None
    families: dict[str, _FamilyHeader] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Local:
    """This rank's contribution: its step, header and packed per-sequence arrays and tails."""

    closed: ClosedStep | None
    header: _Header
    ragged: Float64Array

    @classmethod
    def of(cls, closed: ClosedStep | None) -> _Local:
        if closed is None:
            return cls(None, _Header(), np.zeros(0))
        families: dict[str, _FamilyHeader] = {}
        pieces: list[Float64Array] = [np.zeros(0)]
        for family in FAMILIES:
            p = closed.partials.get(family)
            if p is not None:
                families[family] = _FamilyHeader(
                    p.with_advantages, p.seq_sum.size, p.tail.size, p.max_x, p.min_x
                )
                pieces += [p.seq_sum, p.seq_count.astype(np.float64), p.tail]
        header = _Header(closed.step, families, dict(closed.scalar_means()))
        return cls(closed, header, np.concatenate(pieces))


@dataclass(frozen=True)
class _Plan:
    """What every rank derives identically from the gathered headers."""

    families: list[str]
    max_x: dict[str, float]
    min_x: dict[str, float]
    with_advantages: dict[str, bool]
    width: int  # longest packed per-sequence vector over the ranks

    @classmethod
    def of(cls, headers: list[_Header]) -> _Plan:
        present = [f for f in FAMILIES if any(f in h.families for h in headers)]
        parts = {f: [h.families[f] for h in headers if f in h.families] for f in present}
        return cls(
            families=present,
            max_x={f: max(p.max_x for p in parts[f]) for f in present},
            min_x={f: min(p.min_x for p in parts[f]) for f in present},
            with_advantages={f: any(p.with_advantages for p in parts[f]) for f in present},
            width=max(sum(2 * p.rows + p.tail for p in h.families.values()) for h in headers),
        )


@dataclass(frozen=True)
class _Gathered:
    """Rank 0's view after the collectives (``sums``/``pieces`` None elsewhere or when skipped)."""

    headers: list[_Header]
    plan: _Plan
    sums: Float64Array | None = None
    pieces: list[Float64Array] | None = None


class RankMerger:
    """Merges closed steps across ranks; a pass-through when no process group is initialized."""

    def __init__(self, guard: Guard, *, dist: Any = None) -> None:
        """``dist``: ``torch.distributed`` or a stand-in (default: detected at each step)."""
        self._guard = guard
        self._dist = dist
        self._failed = False
        self._merged_before = False
        self._warned_steps = False

    def merge(self, closed: ClosedStep | None) -> ClosedStep | None:
        """The step merged over all ranks on rank 0; None on other ranks.

        A collective under ``torch.distributed``: every rank must call it at the same point, with
        its step or None (a rank with nothing open still takes part).
        """
        dist = self._dist if self._dist is not None else initialized_distributed()
        if self._failed:
            return closed
        if dist is None or dist.get_world_size() == 1:
            if self._merged_before and closed is not None:
                self._guard.count_lost(LOST_AFTER_GROUP)
                return None
            return closed
        self._merged_before = True
        rank = int(dist.get_rank())
        local = _Local.of(None)
        with self._guard.contained("distributed merge: local part"):
            local = _Local.of(closed)
        gathered = None
        with self._guard.contained("distributed merge"):
            try:
                gathered = self._exchange(dist, rank, local)
            except Exception:
                self._failed = True
                logger.warning(
                    "ratiowatch: a collective failed on rank %d; it stops merging statistics "
                    "across ranks for the rest of the run",
                    rank,
                )
                raise
        if gathered is None:
            return closed if rank == 0 else None
        if rank != 0 or all(h.step is None for h in gathered.headers):
            return None
        with self._guard.contained("distributed merge: assembly"):
            return self._assemble(gathered, closed)
        return closed

    def _exchange(self, dist: Any, rank: int, local: _Local) -> _Gathered:
        import torch

        world = int(dist.get_world_size())
        headers: list[Any] = [None] * world
        dist.all_gather_object(headers, local.header)
        plan = _Plan.of(headers)
        if not plan.families:
            return _Gathered(headers, plan)
        device = _collective_device(dist, torch)
        sums = torch.from_numpy(self._packed_sums(local, plan)).to(device)
        dist.reduce(sums, dst=0)
        ragged = torch.zeros(plan.width, dtype=torch.float64, device=device)
        ragged[: local.ragged.size] = torch.from_numpy(local.ragged).to(device)
        pieces = [torch.empty_like(ragged) for _ in range(world)] if rank == 0 else None
        dist.gather(ragged, gather_list=pieces, dst=0)
        if pieces is None:
            return _Gathered(headers, plan)
        return _Gathered(headers, plan, sums.cpu().numpy(), [p.cpu().numpy() for p in pieces])

    def _packed_sums(self, local: _Local, plan: _Plan) -> Float64Array:
        """Per family: shifted scalar sums, then sketch counts; zeros if packing failed."""
        packed = np.zeros(len(plan.families) * _STRIDE)
        with self._guard.contained("distributed merge: local part"):
            partials = {} if local.closed is None else local.closed.partials
            for i, family in enumerate(plan.families):
                p = partials.get(family) or FamilyPartial.empty()
                block = packed[i * _STRIDE : (i + 1) * _STRIDE]
                block[: len(SCALAR_FIELDS)] = p.collective_arrays(plan.max_x[family])[0]
                block[len(SCALAR_FIELDS) :] = p.sketch.bins
        return packed

    def _assemble(self, gathered: _Gathered, closed: ClosedStep | None) -> ClosedStep:
        headers, sums, pieces = gathered.headers, gathered.sums, gathered.pieces
        steps = sorted({h.step for h in headers if h.step is not None})
        if len(steps) > 1 and not self._warned_steps:
            self._warned_steps = True
            logger.warning("ratiowatch: ranks closed different steps %s together", steps)
        merged = ClosedStep(
            closed.step if closed is not None else steps[0],
            partials={}
            if sums is None or pieces is None
            else _merged_partials(headers, gathered.plan, sums, pieces),
            scalar_calls=[h.scalars for h in headers if h.scalars],
            grad_norm=None if closed is None else closed.grad_norm,
            has_grad_norm=closed is not None and closed.has_grad_norm,
            time=time.time() if closed is None else closed.time,
        )
        return merged


def _merged_partials(
    headers: list[_Header], plan: _Plan, sums: Float64Array, pieces: list[Float64Array]
) -> dict[str, FamilyPartial]:
    """Rank 0: each family's partial from the reduced sums and every rank's packed arrays."""
    offsets = [0] * len(headers)
    partials = {}
    for i, family in enumerate(plan.families):
        block = sums[i * _STRIDE : (i + 1) * _STRIDE]
        seq_sum, seq_count, tails = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
        for rank, header in enumerate(headers):
            part = header.families.get(family)
            if part is None:
                continue
            start, rows = offsets[rank], part.rows
            piece = pieces[rank]
            seq_sum.append(piece[start : start + rows])
            seq_count.append(piece[start + rows : start + 2 * rows])
            tails.append(piece[start + 2 * rows : start + 2 * rows + part.tail])
            offsets[rank] = start + 2 * rows + part.tail
        partials[family] = FamilyPartial.from_collective(
            block[: len(SCALAR_FIELDS)],
            np.array([plan.max_x[family], -plan.min_x[family]]),
            bins=np.rint(block[len(SCALAR_FIELDS) :]).astype(np.int64),
            seq_sum=np.concatenate(seq_sum),
            seq_count=np.rint(np.concatenate(seq_count)).astype(np.int64),
            with_advantages=plan.with_advantages[family],
            tail=np.concatenate(tails),
        )
    return partials


def _collective_device(dist: Any, torch: Any) -> Any:
    """CPU for gloo (alone or in a mixed group), else the current CUDA device for nccl."""
    backend = str(dist.get_backend()).lower()
    if "gloo" in backend or "nccl" not in backend:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())
