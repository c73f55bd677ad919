"""Pydantic models of everything that crosses the HTTP boundary (and the dashboard's reads)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ratiowatch.sketch import RatioSketch

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
METRIC_KEY_PATTERN = r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$"
MAX_STEPS_PER_BATCH = 10_000
MAX_METRICS_PER_STEP = 1_000

MetricKey = Annotated[str, Field(pattern=METRIC_KEY_PATTERN, max_length=200)]
# Strict: JSON true/false or "1.5" as a metric is a client bug to report, not a number to guess.
Number = Annotated[float, Field(strict=True)]
LossReason = Annotated[str, Field(max_length=64)]
LossCount = Annotated[int, Field(ge=0, strict=True)]
ProjectName = Annotated[str, Field(min_length=1, max_length=200)]
AlertState = Literal["firing", "resolved"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunIn(StrictModel):
    project: ProjectName
    name: Annotated[str, Field(max_length=200)] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=100)


class RunOut(BaseModel):
    id: str
    project: str
    name: str
    config: dict[str, Any]
    tags: list[str]
    created_at: float
    updated_at: float
    last_step: int | None
    step_count: int
    open_alerts: int = 0
    client_losses: dict[str, int] = Field(default_factory=dict)


class ProjectOut(BaseModel):
    name: str
    run_count: int
    updated_at: float


class StepIn(StrictModel):
    step: Annotated[int, Field(ge=0, le=2**62, strict=True)]
    time: Number
    metrics: dict[MetricKey, Number | None] = Field(default_factory=dict)
    sketches: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], dict[str, Any]] = Field(
        default_factory=dict
    )

    @field_validator("metrics")
    @classmethod
    def _bounded_and_finite(cls, metrics: dict[str, float | None]) -> dict[str, float | None]:
        """NaN/Inf are signals the client already counts; they are stored as null."""
        if len(metrics) > MAX_METRICS_PER_STEP:
            raise ValueError(f"at most {MAX_METRICS_PER_STEP} metrics per step")
        return {k: v if v is None or math.isfinite(v) else None for k, v in metrics.items()}

    @field_validator("sketches")
    @classmethod
    def _valid_sketches(cls, sketches: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for family, data in sketches.items():
            try:
                RatioSketch.from_wire(data)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"sketches.{family}: {exc}") from exc
        return sketches


class StepBatchIn(StrictModel):
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS_PER_BATCH)
    client_losses: dict[LossReason, LossCount] = Field(default_factory=dict, max_length=50)


class AlertOut(BaseModel):
    id: int
    run_id: str
    project: str
    rule: str
    metric: str
    severity: str
    message: str
    step: int
    last_step: int
    value: float | None
    created_at: float
    state: AlertState
    resolved_at: float | None
    resolved_step: int | None
    acknowledged: bool


class StepBatchOut(BaseModel):
    accepted: int
    duplicate: int
    alerts: list[AlertOut]


class SeriesOut(BaseModel):
    key: str
    steps: list[int]
    values: list[float | None]
    total_points: int


class SeriesResponse(BaseModel):
    run_id: str
    series: list[SeriesOut]


class BucketOut(BaseModel):
    ratio: float | None = Field(description="bucket's representative ratio; null above 1e38")
    count: int


class DistributionOut(BaseModel):
    run_id: str
    family: str
    steps: int
    count: int
    quantiles: dict[str, float | None]
    buckets: list[BucketOut]


class HealthOut(BaseModel):
    status: Literal["ok"]
    database: str
