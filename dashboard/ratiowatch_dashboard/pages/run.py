"""The run page at ``/runs/<run_id>``: the ratio distribution, its health charts and the alerts.

The page refreshes on a ``dcc.Interval``. Each tick first reads the run row (one cheap query) and
redraws the charts only when the run changed (new steps, alerts opened or closed, another family),
so an idle page costs the database one small read per tick.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate
from starlette.concurrency import run_in_threadpool

from ratiowatch_dashboard import components, figures, theme
from ratiowatch_dashboard.data import DashboardData, RunView
from ratiowatch_server.schemas import RunOut

GRAPHS = ("chart-fan", "chart-ess", "chart-clip", "chart-kl", "chart-grad")
CHARTS = (
    ("chart-ess", "Effective sample size", "1 = on-policy; falling = few tokens dominate"),
    ("chart-clip", "Clip fractions", "share of tokens outside the trust region"),
    ("chart-kl", "KL estimators", "k1, k2, k3 of KL(behaviour || target)"),
    ("chart-grad", "Gradient norm", "global norm; spikes precede divergence"),
)


def layout(run: RunOut, refresh_ms: int) -> html.Div:
    """The page skeleton; the first refresh (fired on load) fills charts, stats and alerts."""
    return html.Div(
        className="rw-page",
        children=[
            _head(run),
            html.Div(
                className="rw-toolbar",
                children=[
                    html.Span("Ratio family", className="rw-toolbar-label"),
                    dcc.RadioItems(id="run-family", options=[], inline=True, className="rw-seg"),
                ],
            ),
            html.Div([_charts(), _alerts_panel()], className="rw-run-grid"),
            dcc.Store(id="run-id", data=run.id),
            dcc.Store(id="run-seen"),
            dcc.Interval(id="run-interval", interval=refresh_ms),
        ],
    )


def _head(run: RunOut) -> html.Div:
    title = html.Div(
        [
            html.Div([dcc.Link("Runs", href="/"), f" / {run.project}"], className="rw-crumbs"),
            html.H1(run.name, id="run-title", className="rw-title"),
            html.Div(f"run id {run.id}", className="rw-muted rw-small"),
        ]
    )
    stats = html.Div(header_stats(run), id="run-stats", className="rw-stats")
    return html.Div([title, stats], className="rw-run-head")


def _charts() -> html.Div:
    fan = components.chart_card(
        "chart-fan",
        "Ratio distribution",
        "quantile bands of r = π/π_old, dashed = clip bounds",
        height=theme.FAN_HEIGHT,
        wide=True,
    )
    grid = [components.chart_card(graph, title, note) for graph, title, note in CHARTS]
    return html.Div([fan, html.Div(grid, className="rw-chart-grid")], className="rw-charts")


def _alerts_panel() -> html.Aside:
    return html.Aside(
        [
            html.H3("Alerts", className="rw-card-title"),
            html.Div(id="alert-list", className="rw-alert-list"),
        ],
        className="rw-card rw-alerts-panel",
    )


def not_found(run_id: str) -> html.Div:
    """What an unknown or deleted run id shows: a plain sentence and the way back."""
    return html.Div(
        className="rw-page rw-not-found",
        id="run-not-found",
        children=[
            html.H1("Run not found", className="rw-title"),
            html.P(f"No run has the id {run_id!r}. It may not have logged yet, or was removed."),
            dcc.Link("Back to all runs", href="/"),
        ],
    )


def header_stats(run: RunOut) -> list[html.Div]:
    last = "-" if run.last_step is None else run.last_step
    stats = [
        components.stat("Last step", last, element_id="run-last-step"),
        components.stat("Steps", run.step_count),
        components.stat(
            "Open alerts", run.open_alerts, element_id="run-open-alerts", danger=run.open_alerts > 0
        ),
        components.stat("Updated", components.ago(run.updated_at)),
    ]
    lost = sum(run.client_losses.values())
    if lost:
        # The client counts every record it could not deliver, by reason; say so where it shows.
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(run.client_losses.items()))
        stats.append(
            components.stat(f"Lost steps ({reasons})", lost, element_id="run-lost", danger=True)
        )
    return stats


def chart_figures(view: RunView) -> list[go.Figure]:
    """The five charts of the page, in :data:`GRAPHS` order, keeping zoom across refreshes."""
    marks = view.marks
    grad = figures.grad_chart(view.series, alerts=marks)
    if view.family is None:
        family_charts = [figures.empty_figure(height=theme.FAN_HEIGHT)] + [
            figures.empty_figure()
        ] * 3
    else:
        fam, series = view.family, view.series
        family_charts = [
            figures.fan_chart(fam, series, clip=view.clip, alerts=marks),
            figures.ess_chart(fam, series, alerts=marks),
            figures.clip_chart(fam, series, alerts=marks),
            figures.kl_chart(fam, series, alerts=marks),
        ]
    result = [*family_charts, grad]
    for fig in result:
        # Same uirevision across refreshes: plotly keeps the user's zoom while data grows.
        fig.update_layout(uirevision=f"{view.run.id}:{view.family}")
    return result


def render(data: DashboardData, run_id: str, family: str | None, seen: Any) -> tuple[Any, ...]:
    """All outputs of one tick; heavy ones are ``no_update`` unless the run changed."""
    run = data.run(run_id)
    if run is None:
        raise PreventUpdate
    unchanged = seen is not None and seen == _signature(run, family)
    if unchanged:
        return (no_update, header_stats(run), *[no_update] * (len(GRAPHS) + 4))
    view = data.run_view(run, family)
    options = [{"label": name, "value": name} for name in view.families]
    return (
        run.name,
        header_stats(run),
        options,
        view.family,
        *chart_figures(view),
        components.alert_list(view.alerts),
        _signature(run, view.family),
    )


def _signature(run: RunOut, family: str | None) -> list[Any]:
    """What, when unchanged, means the charts need no redraw (acks aside, ingest moves all)."""
    return [run.step_count, run.last_step, run.updated_at, run.open_alerts, family]


def register(app: Dash, data: DashboardData) -> None:
    @app.callback(
        Output("run-title", "children"),
        Output("run-stats", "children"),
        Output("run-family", "options"),
        Output("run-family", "value"),
        *[Output(graph, "figure") for graph in GRAPHS],
        Output("alert-list", "children"),
        Output("run-seen", "data"),
        Input("run-interval", "n_intervals"),
        Input("run-family", "value"),
        State("run-id", "data"),
        State("run-seen", "data"),
    )
    async def refresh(_ticks: int | None, family: str | None, run_id: str, seen: Any) -> tuple:
        return await run_in_threadpool(render, data, run_id, family, seen)
