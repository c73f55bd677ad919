"""The wire format shared with the server: one record per finalised step."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """One step's metrics (``family/stat``, ``grad/norm``, ``train/*``) and ratio sketches."""

    step: int
    time: float
    metrics: Mapping[str, float | None]
    sketches: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: non-finite numbers become null (JSON has no NaN; the server counts them)."""
        return {
            "step": self.step,
            "time": self.time,
            "metrics": {k: finite_or_none(v) for k, v in self.metrics.items()},
            "sketches": {k: dict(v) for k, v in self.sketches.items()},
        }

    def encode(self) -> bytes:
        """Compact JSON, as it travels in a batch and sits on a spool line."""
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepRecord:
        return cls(
            step=int(data["step"]),
            time=float(data["time"]),
            metrics=dict(data["metrics"]),
            sketches=dict(data.get("sketches", {})),
        )


@dataclass(frozen=True)
class RunInfo:
    """What the server needs to create the run; kept beside the spool so sync can recreate it."""

    run_id: str
    project: str
    name: str
    config: Mapping[str, Any]
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "name": self.name,
            "config": dict(self.config),
            "tags": list(self.tags),
        }

    @classmethod
    def from_json(cls, run_id: str, data: Mapping[str, Any]) -> RunInfo:
        return cls(
            run_id=run_id,
            project=str(data["project"]),
            name=str(data["name"]),
            config=dict(data.get("config", {})),
            tags=tuple(data.get("tags", ())),
        )


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or Inf: non-finite numbers travel and are stored as null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
