"""The dashboard's reads: the only module that talks to the server's query layer.

Every function here blocks on the database; callbacks call them through
``starlette.concurrency.run_in_threadpool`` so a slow query never stalls the event loop that also
serves the API. What comes back is plain data the figure builders and components take as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ratiowatch_dashboard.figures import DEFAULT_CLIP, FAN_STATS, AlertMark, Series, chart_keys
from ratiowatch_server.errors import NotFoundError
from ratiowatch_server.query import Query
from ratiowatch_server.schemas import AlertOut, AlertState, RunOut

#: Families in the order users meet them; any other family a client logs follows alphabetically.
KNOWN_FAMILIES = ("ppo", "mismatch", "offpolicy")
NOT_FAMILIES = frozenset({"grad", "train"})
#: Points per series: about one per horizontal pixel of a wide chart.
CHART_POINTS = 1200
MAX_LISTED_ALERTS = 200


@dataclass(frozen=True)
class RunView:
    """Everything the run page draws for one run and one ratio family."""

    run: RunOut
    families: list[str]
    family: str | None
    clip: tuple[float, float]
    series: dict[str, Series] = field(default_factory=dict)
    alerts: list[AlertOut] = field(default_factory=list)

    @property
    def marks(self) -> list[AlertMark]:
        return [alert_mark(alert) for alert in self.alerts]


def alert_mark(alert: AlertOut) -> AlertMark:
    return AlertMark(
        rule=alert.rule,
        metric=alert.metric,
        severity=alert.severity,
        state=alert.state,
        message=alert.message,
        step=alert.step,
        last_step=alert.last_step,
    )


def default_family(present: Sequence[str], alerts: Sequence[AlertOut]) -> str | None:
    """The family of the newest firing alert among ``present``, else the first present."""
    for alert in alerts:  # newest first
        family = alert.metric.split("/", 1)[0]
        if alert.state == "firing" and family in present:
            return family
    return present[0] if present else None


def families(keys: Sequence[str]) -> list[str]:
    """Ratio families among metric keys: prefixes carrying ratio statistics (not grad, train)."""
    ratio_stats = {*FAN_STATS, "ess", "mean", "count"}
    found = {
        key.split("/", 1)[0]
        for key in keys
        if "/" in key and key.split("/", 1)[1] in ratio_stats and key.split("/", 1)[0]
    }
    found -= NOT_FAMILIES
    known = [family for family in KNOWN_FAMILIES if family in found]
    return known + sorted(found - set(KNOWN_FAMILIES))


def clip_range(config: dict[str, object]) -> tuple[float, float]:
    """The run's ``[eps_low, eps_high]`` from its config; the PPO default when absent or invalid.

    The config is whatever the trainer sent, so a malformed value falls back instead of breaking
    the page.
    """
    value = config.get("clip")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = value
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if numbers and all(math.isfinite(v) and 0 <= v < 10 for v in (low, high)):
            return float(low), float(high)
    return DEFAULT_CLIP


class DashboardData:
    """Reads for the pages, over one :class:`~ratiowatch_server.query.Query`."""

    def __init__(self, query: Query) -> None:
        self.query = query

    def projects(self) -> list[str]:
        return [project.name for project in self.query.projects()]

    def runs(self, project: str | None = None) -> list[RunOut]:
        return self.query.runs(project or None)

    def run(self, run_id: str) -> RunOut | None:
        """The run, or ``None`` when no run has that id (the page says so; nothing raises)."""
        try:
            return self.query.run(run_id)
        except NotFoundError:
            return None

    def alerts(
        self,
        project: str | None = None,
        run_id: str | None = None,
        state: AlertState | None = None,
    ) -> list[AlertOut]:
        """Newest first, at most :data:`MAX_LISTED_ALERTS` (a page, not an export)."""
        return self.query.alerts(project or None, run_id, state)[:MAX_LISTED_ALERTS]

    def run_view(self, run: RunOut, family: str | None) -> RunView:
        """Series and alerts of ``run`` for ``family``.

        With no family chosen yet, the page opens on the family of the newest firing alert, where
        the trouble is, else on the first family present.
        """
        try:
            keys = self.query.metric_keys(run.id)
        except NotFoundError:
            keys = []
        present = families(keys)
        alerts = self.alerts(run_id=run.id)
        chosen = family if family in present else default_family(present, alerts)
        wanted = [key for key in chart_keys(chosen or "") if key in set(keys)]
        series = {}
        if wanted:
            for item in self.query.series(run.id, wanted, points=CHART_POINTS):
                series[item.key] = Series(steps=item.steps, values=item.values)
        return RunView(
            run=run,
            families=present,
            family=chosen,
            clip=clip_range(run.config),
            series=series,
            alerts=alerts,
        )
