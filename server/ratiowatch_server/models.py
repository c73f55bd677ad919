"""The relational schema; Alembic migrations in ``migrations/`` are the only way it changes.

Times are epoch seconds (float): SQLite returns timezone-aware datetimes naive, epoch avoids that.
Metrics are stored long (one row per run, key and step) so any key can be added by any client
without a schema change.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

RUN_ID_MAX = 64
KEY_MAX = 200


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(RUN_ID_MAX), primary_key=True)
    project: Mapped[str] = mapped_column(String(KEY_MAX), index=True)
    name: Mapped[str] = mapped_column(String(KEY_MAX))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    client_losses: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


class Step(Base):
    __tablename__ = "steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    time: Mapped[float] = mapped_column(Float)


class MetricValue(Base):
    __tablename__ = "metric_values"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(KEY_MAX), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)


class StepSketch(Base):
    __tablename__ = "step_sketches"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    family: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        # At most one open alert per (run, rule): a partial unique index, so concurrent workers
        # cannot both open one.
        Index(
            "uq_alerts_open_per_rule",
            "run_id",
            "rule",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    project: Mapped[str] = mapped_column(String(KEY_MAX), index=True)
    rule: Mapped[str] = mapped_column(String(KEY_MAX))
    metric: Mapped[str] = mapped_column(String(KEY_MAX))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(1000))
    step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    resolved_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)


class DetectorState(Base):
    """Saved state of a stateful alert detector (a CUSUM), so it survives restarts and workers."""

    __tablename__ = "detector_states"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(KEY_MAX), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
