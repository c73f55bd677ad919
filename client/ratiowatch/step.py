"""Accumulates the ``log`` calls of one step (micro-batches, gradient accumulation) into one record.

Ratio statistics merge exactly (token-weighted sums, summed sketches, concatenated sequences); user
scalars are averaged over the calls that gave them; the gradient norm keeps the last value given,
since the global norm is known only after the last micro-batch's backward pass.

Closing a step only moves references (:class:`ClosedStep`); building the metric record happens in
the sender thread, off the trainer's ``log`` call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ratiowatch.records import StepRecord
from ratiowatch.stats import FamilyPartial


@dataclass(slots=True)
class ClosedStep:
    """Everything logged for one step, not yet reduced to metrics."""

    step: int
    partials: dict[str, FamilyPartial] = field(default_factory=dict)
    scalar_calls: list[Mapping[str, float]] = field(default_factory=list)
    grad_norm: float | None = None
    has_grad_norm: bool = False
    time: float = 0.0

    def to_record(self) -> StepRecord:
        metrics: dict[str, float | None] = {}
        sketches = {}
        for family, partial in self.partials.items():
            for stat, value in partial.finalize().items():
                metrics[f"{family}/{stat}"] = value
            sketches[family] = partial.sketch.to_wire()
        if self.has_grad_norm:
            metrics["grad/norm"] = self.grad_norm
        for name, value in self.scalar_means().items():
            metrics[f"train/{name}"] = float(value)  # ints and bools pass log's check as is
        return StepRecord(step=self.step, time=self.time, metrics=metrics, sketches=sketches)

    def scalar_means(self) -> Mapping[str, float]:
        """Each user scalar averaged over the calls that gave it."""
        return _average(self.scalar_calls)


class StepAccumulator:
    """Holds the open step; ``add`` returns the previous step when a new step begins."""

    def __init__(self) -> None:
        self._open: ClosedStep | None = None

    def add(
        self,
        step: int,
        partials: Mapping[str, FamilyPartial],
        grad_norm: float | None,
        scalars: Mapping[str, float],
    ) -> ClosedStep | None:
        finished = None
        if self._open is not None and self._open.step != step:
            finished = self.finish()
        if self._open is None:
            self._open = ClosedStep(step)
        current = self._open
        for family, partial in partials.items():
            merged = current.partials.get(family)
            current.partials[family] = partial if merged is None else merged.merge(partial)
        if scalars:
            current.scalar_calls.append(scalars)
        if grad_norm is not None:
            current.grad_norm, current.has_grad_norm = grad_norm, True
        return finished

    def finish(self) -> ClosedStep | None:
        """The open step, stamped with the time it closed (None if no step is open)."""
        closed, self._open = self._open, None
        if closed is not None:
            closed.time = time.time()
        return closed


def _average(calls: list[Mapping[str, float]]) -> Mapping[str, float]:
    """Per-name mean over the calls that gave the name (one call, the usual case, is free)."""
    if len(calls) == 1:
        return calls[0]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for scalars in calls:
        for name, value in scalars.items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    return {name: total / counts[name] for name, total in sums.items()}
