"""Alert rows: applying engine events, listing and acknowledging."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ratiowatch_server.alerts.engine import AlertEvent
from ratiowatch_server.errors import NotFoundError
from ratiowatch_server.models import Alert, DetectorState
from ratiowatch_server.schemas import AlertOut, AlertState


def open_alerts(session: Session, run_id: str) -> dict[str, Alert]:
    rows = session.scalars(
        select(Alert).where(Alert.run_id == run_id, Alert.resolved_at.is_(None))
    ).all()
    return {alert.rule: alert for alert in rows}


def apply_events(
    session: Session, run_id: str, project: str, events: Sequence[AlertEvent], now: float
) -> list[Alert]:
    """Open, extend and resolve alerts as the events say; returns the alerts opened."""
    current = open_alerts(session, run_id)
    opened: list[Alert] = []
    for event in events:
        name = event.rule.name
        if event.kind == "fire":
            alert = Alert(
                run_id=run_id,
                project=project,
                rule=name,
                metric=event.rule.metric,
                severity=event.rule.severity,
                message=event.message[:1000],
                step=event.step,
                last_step=event.step,
                value=event.value,
                created_at=now,
                acknowledged=False,
            )
            session.add(alert)
            session.flush()
            current[name] = alert
            opened.append(alert)
        elif event.kind == "update" and name in current:
            current[name].last_step = event.step
            current[name].value = event.value
        elif event.kind == "resolve" and name in current:
            alert = current.pop(name)
            alert.resolved_at = now
            alert.resolved_step = event.step
    session.flush()
    return opened


def to_out(alert: Alert) -> AlertOut:
    state: AlertState = "firing" if alert.resolved_at is None else "resolved"
    return AlertOut(
        id=alert.id,
        run_id=alert.run_id,
        project=alert.project,
        rule=alert.rule,
        metric=alert.metric,
        severity=alert.severity,
        message=alert.message,
        step=alert.step,
        last_step=alert.last_step,
        value=alert.value,
        created_at=alert.created_at,
        state=state,
        resolved_at=alert.resolved_at,
        resolved_step=alert.resolved_step,
        acknowledged=alert.acknowledged,
    )


def list_alerts(
    session: Session,
    project: str | None = None,
    run_id: str | None = None,
    state: AlertState | None = None,
    limit: int = 1000,
) -> list[AlertOut]:
    query = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit)
    if project is not None:
        query = query.where(Alert.project == project)
    if run_id is not None:
        query = query.where(Alert.run_id == run_id)
    if state == "firing":
        query = query.where(Alert.resolved_at.is_(None))
    elif state == "resolved":
        query = query.where(Alert.resolved_at.is_not(None))
    return [to_out(alert) for alert in session.scalars(query)]


def acknowledge(session: Session, alert_id: int) -> AlertOut:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFoundError(f"alert {alert_id} does not exist")
    alert.acknowledged = True
    session.flush()
    return to_out(alert)


def detector_states(session: Session, run_id: str) -> dict[str, dict[str, Any]]:
    rows = session.scalars(select(DetectorState).where(DetectorState.run_id == run_id))
    return {row.rule: row.state for row in rows}


def save_detector_states(
    session: Session, run_id: str, states: Mapping[str, dict[str, Any]]
) -> None:
    for rule, state in states.items():
        session.merge(DetectorState(run_id=run_id, rule=rule, state=state))
    session.flush()
