"""The runs overview at ``/``: every run, freshest first, with open alerts; filter by project."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from dash import Dash, Input, Output, dcc, html
from starlette.concurrency import run_in_threadpool

from ratiowatch_dashboard import components
from ratiowatch_dashboard.data import DashboardData
from ratiowatch_server.schemas import RunOut

HEADER = ("Project", "Run", "Last step", "Steps", "Open alerts", "Updated")
NUMERIC = ("Last step", "Steps", "Open alerts")


def run_href(run_id: str) -> str:
    return f"/runs/{quote(run_id, safe='')}"


def layout(refresh_ms: int) -> html.Div:
    return components.table_page("Runs", "runs", [], refresh_ms)


def rows(runs: Sequence[RunOut], now: float | None = None) -> list[html.Tr]:
    """One row per run; a run with open alerts gets a red count so it is found at a glance."""
    result = []
    for run in runs:
        alerts_cell = html.Td(
            str(run.open_alerts),
            className="rw-num rw-danger" if run.open_alerts > 0 else "rw-num rw-muted",
        )
        result.append(
            html.Tr(
                [
                    html.Td(run.project, className="rw-muted"),
                    html.Td(dcc.Link(run.name, href=run_href(run.id), className="rw-run-link")),
                    html.Td(
                        "-" if run.last_step is None else str(run.last_step), className="rw-num"
                    ),
                    html.Td(str(run.step_count), className="rw-num"),
                    alerts_cell,
                    html.Td(
                        components.ago(run.updated_at, now),
                        title=components.utc(run.updated_at),
                        className="rw-muted",
                    ),
                ],
                className="rw-row-alerting" if run.open_alerts > 0 else None,
            )
        )
    return result


def register(app: Dash, data: DashboardData) -> None:
    @app.callback(
        Output("runs-table", "children"),
        Output("runs-project", "options"),
        Input("runs-interval", "n_intervals"),
        Input("runs-project", "value"),
    )
    async def refresh(_ticks: int | None, project: str | None) -> tuple[list, list[str]]:
        runs, projects = await run_in_threadpool(lambda: (data.runs(project), data.projects()))
        empty = "No runs yet: start one with ratiowatch.init(project=...)."
        return components.table(HEADER, rows(runs), empty=empty, numeric=NUMERIC), projects
