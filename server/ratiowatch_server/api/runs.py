"""Runs and projects."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query

from ratiowatch_server.api.deps import QueryDep, SessionDep
from ratiowatch_server.schemas import RUN_ID_PATTERN, ProjectOut, RunIn, RunOut
from ratiowatch_server.store import runs as run_store

router = APIRouter(tags=["runs"])

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="client-generated run id")]


@router.put("/runs/{run_id}")
def put_run(run_id: RunId, body: RunIn, session: SessionDep) -> RunOut:
    """Create or update a run; idempotent, so a client may resend it after any failure."""
    run = run_store.upsert_run(session, run_id, body, time.time())
    return run_store.to_out(run)


@router.get("/runs/{run_id}")
def get_run(run_id: RunId, query: QueryDep) -> RunOut:
    return query.run(run_id)


@router.get("/runs")
def list_runs(
    query: QueryDep, project: Annotated[str | None, Query(max_length=200)] = None
) -> list[RunOut]:
    return query.runs(project)


@router.get("/projects")
def list_projects(query: QueryDep) -> list[ProjectOut]:
    return query.projects()


@router.get("/runs/{run_id}/metrics")
def metric_keys(run_id: RunId, query: QueryDep) -> list[str]:
    """Every metric key this run has logged."""
    return query.metric_keys(run_id)
