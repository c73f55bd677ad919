"""Accumulates the ``log`` calls of one step (micro-batches, gradient accumulation) into one record.

Ratio statistics merge exactly (token-weighted sums, summed sketches, concatenated sequences); user
scalars are averaged over the calls that gave them; the gradient norm keeps the last value given,
since the global norm is known only after the last micro-batch's backward pass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ratiowatch.records import StepRecord
from ratiowatch.stats import FamilyPartial


class StepAccumulator:
    """Holds the open step; ``add`` returns the previous step's record when a new step begins."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.step: int | None = None
        self._partials: dict[str, FamilyPartial] = {}
        self._scalar_sums: dict[str, float] = {}
        self._scalar_counts: dict[str, int] = {}
        self._grad_norm: float | None = None
        self._has_grad_norm = False

    def add(
        self,
        step: int,
        partials: Mapping[str, FamilyPartial],
        grad_norm: float | None,
        scalars: Mapping[str, float],
    ) -> StepRecord | None:
        finished = self.finish() if self.step is not None and step != self.step else None
        self.step = step
        for family, partial in partials.items():
            current = self._partials.get(family)
            self._partials[family] = partial if current is None else current.merge(partial)
        for name, value in scalars.items():
            self._scalar_sums[name] = self._scalar_sums.get(name, 0.0) + value
            self._scalar_counts[name] = self._scalar_counts.get(name, 0) + 1
        if grad_norm is not None:
            self._grad_norm, self._has_grad_norm = grad_norm, True
        return finished

    def finish(self) -> StepRecord | None:
        """The open step as a record (None if no step is open), and a clean slate."""
        if self.step is None:
            return None
        metrics: dict[str, float | None] = {}
        sketches = {}
        for family, partial in self._partials.items():
            for stat, value in partial.finalize().items():
                metrics[f"{family}/{stat}"] = value
            sketches[family] = partial.sketch.to_wire()
        if self._has_grad_norm:
            metrics["grad/norm"] = self._grad_norm
        for name, total in self._scalar_sums.items():
            metrics[f"train/{name}"] = total / self._scalar_counts[name]
        record = StepRecord(step=self.step, time=time.time(), metrics=metrics, sketches=sketches)
        self._reset()
        return record
