"""The read side, shared by the HTTP API and the dashboard (which never writes SQL of its own)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from ratiowatch.records import finite_or_none
from ratiowatch.sketch import RatioSketch
from ratiowatch.stats import QUANTILE_KEYS, QUANTILES
from ratiowatch_server.downsample import downsample
from ratiowatch_server.prometheus import exposition
from ratiowatch_server.schemas import (
    AlertOut,
    AlertState,
    BucketOut,
    DistributionOut,
    ProjectOut,
    RunOut,
    SeriesOut,
)
from ratiowatch_server.store import alerts as alert_store
from ratiowatch_server.store import runs as run_store
from ratiowatch_server.store import steps as step_store

DEFAULT_POINTS = 2000


class Query:
    """Read-only views of the store, each in its own short session."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def projects(self) -> list[ProjectOut]:
        with self.sessions() as session:
            return run_store.list_projects(session)

    def runs(self, project: str | None = None) -> list[RunOut]:
        with self.sessions() as session:
            return run_store.list_runs(session, project)

    def run(self, run_id: str) -> RunOut:
        with self.sessions() as session:
            return run_store.run_out(session, run_id)

    def metric_keys(self, run_id: str) -> list[str]:
        with self.sessions() as session:
            run_store.get_run(session, run_id)
            return step_store.metric_keys(session, run_id)

    def series(
        self,
        run_id: str,
        keys: Sequence[str],
        start: int | None = None,
        end: int | None = None,
        points: int = DEFAULT_POINTS,
    ) -> list[SeriesOut]:
        """Each key downsampled to ``points`` with every visible extreme kept."""
        result = []
        with self.sessions() as session:
            run_store.get_run(session, run_id)
            for key in keys:
                steps, values = step_store.series(session, run_id, key, start, end)
                kept_steps, kept_values = downsample(steps, values, points)
                result.append(
                    SeriesOut(
                        key=key,
                        steps=kept_steps.tolist(),
                        values=kept_values.tolist(),
                        total_points=int(steps.size),
                    )
                )
        return result

    def distribution(
        self, run_id: str, family: str, start: int | None = None, end: int | None = None
    ) -> DistributionOut:
        """The family's ratio sketches merged over ``[start, end]``: quantiles and buckets."""
        with self.sessions() as session:
            run_store.get_run(session, run_id)
            rows = step_store.sketches(session, run_id, family, start, end)
        merged = RatioSketch()
        for _step, data in rows:
            merged.merge(RatioSketch.from_wire(data))
        return DistributionOut(
            run_id=run_id,
            family=family,
            steps=len(rows),
            count=merged.count,
            quantiles={
                key: finite_or_none(merged.quantile(q))
                for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True)
            },
            buckets=[BucketOut(ratio=finite_or_none(r), count=n) for r, n in merged.buckets()],
        )

    def prometheus(self) -> str:
        with self.sessions() as session:
            runs = run_store.list_runs(session)
            latest = step_store.latest_values(session)
        return exposition(runs, latest)

    def alerts(
        self,
        project: str | None = None,
        run_id: str | None = None,
        state: AlertState | None = None,
    ) -> list[AlertOut]:
        with self.sessions() as session:
            return alert_store.list_alerts(session, project, run_id, state)
