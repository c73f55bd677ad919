"""Mounts the Dash dashboard at ``/`` of the service's FastAPI app.

One Dash app per service: Dash keeps a process-global current app, so ``create_dash`` is called
once, by ``ratiowatch_server.app.create_app``. Pages are routed by a ``dcc.Location`` callback
rather than Dash's page registry, whose registry is also process-global and import-time.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

from dash import Dash, Input, Output, dcc, html
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ratiowatch_dashboard import components
from ratiowatch_dashboard.data import DashboardData
from ratiowatch_dashboard.pages import alerts, run, runs
from ratiowatch_server.query import Query

logger = logging.getLogger("ratiowatch.dashboard")

RUN_PREFIX = "/runs/"


def _log_callback_error(error: Exception) -> None:
    """Dash swallows callback exceptions without a trace; log them, keep the last good view.

    Returning ``None`` makes Dash answer "no update", so a failing read leaves the page showing the
    previous data instead of a broken component; the log (and the browser tests) see the failure.
    """
    logger.error("dashboard callback failed", exc_info=error)


def create_dash(app: FastAPI, query: Query, *, refresh_ms: int = 2000) -> Dash:
    """Build the dashboard on ``app``, reading through ``query``; pages poll every refresh_ms."""
    data = DashboardData(query)
    dash_app = Dash(
        __name__,
        server=app,
        on_error=_log_callback_error,
        suppress_callback_exceptions=True,
        title="ratiowatch",
        update_title=None,
    )
    dash_app.layout = html.Div(
        [
            dcc.Location(id="url", refresh=False),
            components.navbar(),
            html.Main(id="page", className="rw-main"),
        ],
        className="rw-shell",
    )

    @dash_app.callback(Output("page", "children"), Input("url", "pathname"))
    async def route(pathname: str | None) -> html.Div:
        return await run_in_threadpool(page_for, data, pathname or "/", refresh_ms)

    runs.register(dash_app, data)
    run.register(dash_app, data)
    alerts.register(dash_app, data)
    _setup_now(dash_app)
    return dash_app


def _setup_now(dash_app: Dash) -> None:
    """Run Dash's one-time setup (asset scan, index resources) now, not on a first request.

    Dash 4.4 on FastAPI runs it from a middleware that only sees ``/`` and ``/_dash-*`` paths, so
    when the first request of a process is a deep link (``/runs/<id>``) the page is served without
    the stylesheet. The setup is idempotent; every callback is registered by this point.
    """
    setup = getattr(dash_app, "_setup_server", None)
    if callable(setup):
        setup()


def page_for(data: DashboardData, pathname: str, refresh_ms: int) -> html.Div:
    """The page for a URL path; an unknown run or path gets a friendly message, never an error."""
    path = pathname.rstrip("/") or "/"
    if path in ("/", "/runs"):
        return runs.layout(refresh_ms)
    if path == "/alerts":
        return alerts.layout(refresh_ms)
    if path.startswith(RUN_PREFIX):
        run_id = unquote(path[len(RUN_PREFIX) :])
        found = data.run(run_id)
        return run.not_found(run_id) if found is None else run.layout(found, refresh_ms)
    return html.Div(
        [
            html.H1("Page not found", className="rw-title"),
            dcc.Link("Back to all runs", href="/"),
        ],
        className="rw-page rw-not-found",
    )
