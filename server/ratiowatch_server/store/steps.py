"""Steps, their metric values and sketches: idempotent writes and range reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ratiowatch_server.models import MetricValue, Run, Step, StepSketch
from ratiowatch_server.schemas import StepIn


def _insert(session: Session, table: type[Any]) -> Insert:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


def insert_new_steps(session: Session, run_id: str, steps: Sequence[StepIn]) -> list[StepIn]:
    """Store the steps not yet stored for this run and return them, in step order.

    ``ON CONFLICT DO NOTHING ... RETURNING`` makes a resent step (a retry after a lost response,
    or the same batch from two workers at once) a no-op rather than an error or a second copy.
    """
    first_by_step: dict[int, StepIn] = {}
    for record in steps:
        first_by_step.setdefault(record.step, record)
    statement = (
        _insert(session, Step)
        .values(
            [{"run_id": run_id, "step": s.step, "time": s.time} for s in first_by_step.values()]
        )
        .on_conflict_do_nothing()
        .returning(Step.step)
    )
    inserted = set(session.scalars(statement).all())
    new_steps = [first_by_step[step] for step in sorted(inserted)]
    metric_rows = [
        {"run_id": run_id, "key": key, "step": s.step, "value": value}
        for s in new_steps
        for key, value in s.metrics.items()
    ]
    if metric_rows:
        session.execute(_insert(session, MetricValue), metric_rows)
    sketch_rows = [
        {"run_id": run_id, "step": s.step, "family": family, "data": data}
        for s in new_steps
        for family, data in s.sketches.items()
    ]
    if sketch_rows:
        session.execute(_insert(session, StepSketch), sketch_rows)
    return new_steps


def recent_values(
    session: Session, run_id: str, keys: Iterable[str], before_step: int, limit: int
) -> dict[str, list[float | None]]:
    """For each key, up to ``limit`` values logged before ``before_step``, oldest first."""
    history: dict[str, list[float | None]] = {}
    for key in keys:
        rows = session.scalars(
            select(MetricValue.value)
            .where(
                MetricValue.run_id == run_id,
                MetricValue.key == key,
                MetricValue.step < before_step,
            )
            .order_by(MetricValue.step.desc())
            .limit(limit)
        ).all()
        history[key] = list(reversed(rows))
    return history


def metric_keys(session: Session, run_id: str) -> list[str]:
    return list(
        session.scalars(
            select(MetricValue.key)
            .where(MetricValue.run_id == run_id)
            .distinct()
            .order_by(MetricValue.key)
        )
    )


def series(
    session: Session, run_id: str, key: str, start: int | None, end: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Steps (int64) and values (float64, NaN for null) of one key in ``[start, end]``."""
    query = select(MetricValue.step, MetricValue.value).where(
        MetricValue.run_id == run_id, MetricValue.key == key
    )
    if start is not None:
        query = query.where(MetricValue.step >= start)
    if end is not None:
        query = query.where(MetricValue.step <= end)
    rows = session.execute(query.order_by(MetricValue.step)).all()
    steps = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter(
        (np.nan if row[1] is None else row[1] for row in rows), dtype=np.float64, count=len(rows)
    )
    return steps, values


def sketches(
    session: Session, run_id: str, family: str, start: int | None, end: int | None
) -> list[tuple[int, dict[str, Any]]]:
    query = select(StepSketch.step, StepSketch.data).where(
        StepSketch.run_id == run_id, StepSketch.family == family
    )
    if start is not None:
        query = query.where(StepSketch.step >= start)
    if end is not None:
        query = query.where(StepSketch.step <= end)
    return [(step, data) for step, data in session.execute(query.order_by(StepSketch.step))]


def latest_values(session: Session) -> list[tuple[str, str, float | None]]:
    """(run id, key, value) of every metric at each run's last step."""
    rows = session.execute(
        select(MetricValue.run_id, MetricValue.key, MetricValue.value)
        .join(Run, (Run.id == MetricValue.run_id) & (Run.last_step == MetricValue.step))
        .order_by(MetricValue.run_id, MetricValue.key)
    ).all()
    return [(run_id, key, value) for run_id, key, value in rows]
