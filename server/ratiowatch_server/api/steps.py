"""Ingest of step batches."""

from __future__ import annotations

from fastapi import APIRouter

from ratiowatch_server.api.deps import RulesDep, SessionDep
from ratiowatch_server.api.runs import RunId
from ratiowatch_server.ingest import ingest_steps
from ratiowatch_server.schemas import StepBatchIn, StepBatchOut

router = APIRouter(tags=["ingest"])


@router.post("/runs/{run_id}/steps")
def post_steps(
    run_id: RunId, batch: StepBatchIn, session: SessionDep, rules: RulesDep
) -> StepBatchOut:
    """Store a batch of steps; a step already stored for this run is counted as duplicate."""
    return ingest_steps(session, run_id, batch, rules)
