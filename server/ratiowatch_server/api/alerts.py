"""Alerts: list and acknowledge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from ratiowatch_server.api.deps import QueryDep, SessionDep
from ratiowatch_server.schemas import RUN_ID_PATTERN, AlertOut, AlertState
from ratiowatch_server.store import alerts as alert_store

router = APIRouter(tags=["alerts"])


@router.get("/alerts")
def list_alerts(
    query: QueryDep,
    project: Annotated[str | None, Query(max_length=200)] = None,
    run_id: Annotated[str | None, Query(pattern=RUN_ID_PATTERN)] = None,
    state: AlertState | None = None,
) -> list[AlertOut]:
    """Newest first."""
    return query.alerts(project, run_id, state)


@router.post("/alerts/{alert_id}/ack")
def acknowledge(alert_id: Annotated[int, Path(ge=1, le=2**62)], session: SessionDep) -> AlertOut:
    """Mark an alert as seen; it stays open until its condition clears."""
    return alert_store.acknowledge(session, alert_id)
