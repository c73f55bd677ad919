"""Runs and projects."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ratiowatch_server.errors import NotFoundError
from ratiowatch_server.models import Alert, Run
from ratiowatch_server.schemas import ProjectOut, RunIn, RunOut


def upsert_run(session: Session, run_id: str, body: RunIn, now: float) -> Run:
    """Create the run, or update its metadata; the same request twice leaves the same state."""
    run = session.get(Run, run_id)
    if run is None:
        run = Run(
            id=run_id,
            project=body.project,
            name=body.name or run_id,
            config=body.config,
            tags=body.tags,
            created_at=now,
            updated_at=now,
            last_step=None,
            step_count=0,
            client_losses={},
        )
        session.add(run)
    else:
        run.project = body.project
        run.name = body.name or run.name
        run.config = body.config
        run.tags = body.tags
        run.updated_at = now
    session.flush()
    return run


def get_run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} does not exist; create it with PUT /runs/{run_id}")
    return run


def to_out(run: Run, open_alerts: int = 0) -> RunOut:
    return RunOut(
        id=run.id,
        project=run.project,
        name=run.name,
        config=run.config,
        tags=run.tags,
        created_at=run.created_at,
        updated_at=run.updated_at,
        last_step=run.last_step,
        step_count=run.step_count,
        open_alerts=open_alerts,
        client_losses=run.client_losses,
    )


def list_runs(session: Session, project: str | None = None) -> list[RunOut]:
    """Runs, most recently updated first, each with its count of open alerts."""
    open_counts = (
        select(Alert.run_id, func.count().label("n"))
        .where(Alert.resolved_at.is_(None))
        .group_by(Alert.run_id)
        .subquery()
    )
    query = (
        select(Run, func.coalesce(open_counts.c.n, 0))
        .outerjoin(open_counts, open_counts.c.run_id == Run.id)
        .order_by(Run.updated_at.desc())
    )
    if project is not None:
        query = query.where(Run.project == project)
    rows: Sequence[tuple[Run, int]] = session.execute(query).all()  # type: ignore[assignment]
    return [to_out(run, count) for run, count in rows]


def run_out(session: Session, run_id: str) -> RunOut:
    run = get_run(session, run_id)
    open_count = session.scalar(
        select(func.count()).where(Alert.run_id == run_id, Alert.resolved_at.is_(None))
    )
    return to_out(run, open_count or 0)


def list_projects(session: Session) -> list[ProjectOut]:
    rows = session.execute(
        select(Run.project, func.count(), func.max(Run.updated_at))
        .group_by(Run.project)
        .order_by(func.max(Run.updated_at).desc())
    ).all()
    return [
        ProjectOut(name=name, run_count=count, updated_at=updated) for name, count, updated in rows
    ]
