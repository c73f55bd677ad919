"""Small layout pieces shared by the pages: navigation, stat chips, chart cards, alert rows.

They take plain values and return Dash components, so pages stay a list of pieces and the look
(class names styled in ``assets/style.css``) is decided once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from dash import dcc, html

from ratiowatch_dashboard import theme
from ratiowatch_server.schemas import AlertOut

GRAPH_CONFIG = {
    "displaylogo": False,
    "displayModeBar": "hover",
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
}


def navbar() -> html.Header:
    return html.Header(
        className="rw-nav",
        children=[
            dcc.Link(
                [html.Span("ratio", className="rw-logo-a"), html.Span("watch")],
                href="/",
                className="rw-logo",
            ),
            html.Nav(
                [
                    dcc.Link("Runs", href="/", className="rw-nav-link"),
                    dcc.Link("Alerts", href="/alerts", className="rw-nav-link"),
                ]
            ),
        ],
    )


def ago(timestamp: float | None, now: float | None = None) -> str:
    """``12 s ago``, ``5 min ago``: how fresh a run is matters more than the clock time."""
    if timestamp is None:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def utc(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def stat(
    label: str, value: object, *, element_id: str | None = None, danger: bool = False
) -> html.Div:
    """A labelled number in the run header; ``danger`` paints it red (open alerts)."""
    value_props = {"id": element_id} if element_id else {}
    return html.Div(
        className="rw-stat" + (" rw-stat-danger" if danger else ""),
        children=[
            html.Div(label, className="rw-stat-label"),
            html.Div(str(value), className="rw-stat-value", **value_props),
        ],
    )


def chart_card(
    graph_id: str, title: str, note: str, *, height: int = theme.CHART_HEIGHT, wide: bool = False
) -> html.Section:
    """A titled card holding one chart; the note says what healthy looks like.

    The graph's box gets an explicit height: a responsive plotly graph sizes itself to its
    container, and a container without height (as on a page swapped in by client-side
    navigation) collapses the plot to a few pixels.
    """
    return html.Section(
        className="rw-card" + (" rw-card-wide" if wide else ""),
        children=[
            html.Div(
                [html.H3(title, className="rw-card-title"), html.Span(note, className="rw-note")],
                className="rw-card-head",
            ),
            dcc.Graph(
                id=graph_id,
                config=GRAPH_CONFIG,
                responsive=True,
                style={"height": f"{height}px"},
                className="rw-graph",
            ),
        ],
    )


def badge(text: str, kind: str) -> html.Span:
    return html.Span(text, className=f"rw-badge rw-badge-{kind}")


def alert_badges(alert: AlertOut) -> list[html.Span]:
    """Severity and state; an acknowledged alert says so, so nobody chases it twice."""
    badges = [badge(alert.severity, alert.severity if alert.state == "firing" else "muted")]
    badges.append(badge(alert.state, alert.state))
    if alert.acknowledged:
        badges.append(badge("acknowledged", "muted"))
    return badges


def alert_steps(alert: AlertOut) -> str:
    if alert.state == "resolved" and alert.resolved_step is not None:
        return f"{alert.step}-{alert.resolved_step}"
    if alert.last_step != alert.step:
        return f"{alert.step}-{alert.last_step}"
    return str(alert.step)


def alert_list(alerts: Sequence[AlertOut]) -> list[html.Div] | html.Div:
    """The run page's alert list, newest first; an explicit line when there is none."""
    if not alerts:
        return html.Div("No alerts for this run.", className="rw-empty")
    return [
        html.Div(
            className=f"rw-alert rw-alert-{alert.state}",
            children=[
                html.Div(
                    [html.Span(alert.rule, className="rw-alert-rule"), *alert_badges(alert)],
                    className="rw-alert-head",
                ),
                html.Div(alert.message, className="rw-alert-message"),
                html.Div(
                    f"step {alert_steps(alert)} · {ago(alert.created_at)}",
                    className="rw-alert-meta",
                    title=utc(alert.created_at),
                ),
            ],
        )
        for alert in alerts
    ]


def table(
    header: Sequence[str], rows: list[html.Tr], *, empty: str, numeric: Sequence[str] = ()
) -> list[html.Thead | html.Tbody]:
    """Children of an ``html.Table``: a header row, then ``rows`` or one row saying ``empty``.

    Columns named in ``numeric`` get right-aligned headers, matching their ``rw-num`` cells.
    """
    body = rows or [html.Tr(html.Td(empty, colSpan=len(header), className="rw-empty"))]
    cells = [html.Th(name, className="rw-num" if name in numeric else None) for name in header]
    return [html.Thead(html.Tr(cells)), html.Tbody(body)]


def table_page(title: str, prefix: str, filters: list[Any], refresh_ms: int) -> html.Div:
    """A titled, live-refreshing table with a project filter: ids ``<prefix>-project``,
    ``<prefix>-table`` and ``<prefix>-interval``; ``filters`` go before the project filter."""
    project = dcc.Dropdown(
        id=f"{prefix}-project", placeholder="All projects", clearable=True, className="rw-filter"
    )
    return html.Div(
        className="rw-page",
        children=[
            html.Div(
                [html.H1(title, className="rw-title"), *filters, project],
                className="rw-page-head",
            ),
            html.Section(
                html.Table(id=f"{prefix}-table", className="rw-table"),
                className="rw-card rw-card-wide",
            ),
            dcc.Interval(id=f"{prefix}-interval", interval=refresh_ms),
        ],
    )
