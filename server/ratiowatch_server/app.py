"""Builds the service: the API mounted at ``/api/v1``, the dashboard at ``/``, one process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ratiowatch_server import migrate
from ratiowatch_server.alerts.rules import Rule, default_rules
from ratiowatch_server.api import alerts, runs, series, steps
from ratiowatch_server.body import RequestBodyMiddleware
from ratiowatch_server.db import make_engine, make_session_factory
from ratiowatch_server.errors import ServiceError
from ratiowatch_server.query import Query
from ratiowatch_server.schemas import HealthOut
from ratiowatch_server.settings import ServerSettings

logger = logging.getLogger("ratiowatch.server")

API_PREFIX = "/api/v1"
ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "Malformed JSON or an impossible request"},
    415: {"description": "Unsupported Content-Encoding"},
    404: {"description": "Unknown run or alert"},
    413: {"description": "Request body too large"},
}


def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


def create_api(query: Query, rules: Sequence[Rule]) -> FastAPI:
    """The JSON API alone; mounted as its own app so the dashboard's catch-all cannot shadow it."""
    api = FastAPI(title="ratiowatch", version="1", responses=ERROR_RESPONSES)
    api.state.query = query
    api.state.sessions = query.sessions
    api.state.rules = list(rules)
    api.add_exception_handler(ServiceError, _service_error)
    for module in (runs, steps, series, alerts):
        api.include_router(module.router)
    return api


def create_app(
    settings: ServerSettings,
    *,
    rules: Sequence[Rule] | None = None,
    run_migrations: bool = True,
    dashboard: bool = True,
) -> FastAPI:
    """The whole service for ``settings``; migrations run at startup unless the caller did."""
    database_url = settings.resolved_database_url()
    engine = make_engine(database_url)
    query = Query(make_session_factory(engine))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            await run_in_threadpool(migrate.upgrade, database_url)
        logger.info("ratiowatch serving %s", engine.url.render_as_string(hide_password=True))
        yield
        engine.dispose()

    app = FastAPI(title="ratiowatch", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/healthz", tags=["health"])
    def healthz() -> HealthOut:
        return HealthOut(status="ok", database=engine.dialect.name)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> str:
        """Prometheus exposition: latest values per run and open alert counts."""
        return query.prometheus()

    app.mount(API_PREFIX, create_api(query, rules if rules is not None else default_rules()))
    if dashboard:
        from ratiowatch_dashboard.app import create_dash

        create_dash(app, query, refresh_ms=settings.dashboard_refresh_ms)
    app.add_middleware(RequestBodyMiddleware, max_bytes=settings.max_body_bytes)
    return app


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several workers): settings from ``RATIOWATCH_*``."""
    return create_app(ServerSettings(), run_migrations=False)
