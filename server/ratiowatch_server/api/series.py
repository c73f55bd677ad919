"""Downsampled series and merged ratio distributions."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query

from ratiowatch.stats import FAMILIES
from ratiowatch_server.api.deps import QueryDep
from ratiowatch_server.api.runs import RunId
from ratiowatch_server.errors import BadRequestError
from ratiowatch_server.schemas import METRIC_KEY_PATTERN, DistributionOut, SeriesResponse

router = APIRouter(tags=["query"])

MAX_KEYS = 50
StepBound = Annotated[int | None, Query(ge=0, le=2**62)]


def _parse_keys(keys: str) -> list[str]:
    parsed = [key.strip() for key in keys.split(",") if key.strip()]
    if not parsed:
        raise BadRequestError("keys: give at least one metric key, e.g. keys=ppo/p99,grad/norm")
    if len(parsed) > MAX_KEYS:
        raise BadRequestError(f"keys: at most {MAX_KEYS} keys per request, got {len(parsed)}")
    bad = [key for key in parsed if not re.fullmatch(METRIC_KEY_PATTERN, key)]
    if bad:
        raise BadRequestError(f"keys: {bad[0]!r} is not a metric key")
    return parsed


def _check_range(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and start > end:
        raise BadRequestError(f"start ({start}) is after end ({end})")


@router.get("/runs/{run_id}/series")
def get_series(
    run_id: RunId,
    query: QueryDep,
    keys: Annotated[str, Query(max_length=10_000, description="comma-separated metric keys")],
    start: StepBound = None,
    end: StepBound = None,
    points: Annotated[int, Query(ge=4, le=100_000)] = 2000,
) -> SeriesResponse:
    """Each key at most ``points`` long; every spike a full-resolution chart shows is kept."""
    _check_range(start, end)
    series = query.series(run_id, _parse_keys(keys), start, end, points)
    return SeriesResponse(run_id=run_id, series=series)


@router.get("/runs/{run_id}/distribution")
def get_distribution(
    run_id: RunId,
    query: QueryDep,
    family: Annotated[str, Query(max_length=32)] = "ppo",
    start: StepBound = None,
    end: StepBound = None,
) -> DistributionOut:
    """The ratio distribution of ``family`` merged over the steps in ``[start, end]``."""
    if family not in FAMILIES:
        raise BadRequestError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    _check_range(start, end)
    return query.distribution(run_id, family, start, end)
