"""All alerts at ``/alerts``, newest first, filterable by project and state: the on-call view."""

from __future__ import annotations

from collections.abc import Sequence

from dash import Dash, Input, Output, dcc, html
from starlette.concurrency import run_in_threadpool

from ratiowatch_dashboard import components
from ratiowatch_dashboard.data import DashboardData
from ratiowatch_dashboard.pages.runs import run_href
from ratiowatch_server.schemas import AlertOut, AlertState

HEADER = ("Run", "Rule", "Severity / state", "Message", "Steps", "Raised")
STATES = [
    {"label": "All", "value": "all"},
    {"label": "Firing", "value": "firing"},
    {"label": "Resolved", "value": "resolved"},
]


def layout(refresh_ms: int) -> html.Div:
    state = dcc.RadioItems(
        id="alerts-state", options=STATES, value="all", inline=True, className="rw-seg"
    )
    return components.table_page("Alerts", "alerts", [state], refresh_ms)


def rows(alerts: Sequence[AlertOut]) -> list[html.Tr]:
    return [
        html.Tr(
            [
                html.Td(
                    dcc.Link(alert.run_id, href=run_href(alert.run_id), className="rw-run-link")
                ),
                html.Td(alert.rule, className="rw-mono"),
                html.Td(components.alert_badges(alert)),
                html.Td(alert.message),
                html.Td(components.alert_steps(alert), className="rw-num"),
                html.Td(
                    components.ago(alert.created_at),
                    title=components.utc(alert.created_at),
                    className="rw-muted",
                ),
            ],
            className="rw-row-alerting" if alert.state == "firing" else None,
        )
        for alert in alerts
    ]


def register(app: Dash, data: DashboardData) -> None:
    @app.callback(
        Output("alerts-table", "children"),
        Output("alerts-project", "options"),
        Input("alerts-interval", "n_intervals"),
        Input("alerts-project", "value"),
        Input("alerts-state", "value"),
    )
    async def refresh(_ticks: int | None, project: str | None, state: str | None) -> tuple:
        chosen: AlertState | None = (
            "firing" if state == "firing" else "resolved" if state == "resolved" else None
        )

        def read() -> tuple[list[AlertOut], list[str]]:
            return data.alerts(project, state=chosen), data.projects()

        alerts, projects = await run_in_threadpool(read)
        return components.table(
            HEADER, rows(alerts), empty="No alerts.", numeric=("Steps",)
        ), projects
