"""Schemathesis fuzzes every endpoint from the OpenAPI schema: no input may cause a 500."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ratiowatch_server import migrate
from ratiowatch_server.app import create_app
from ratiowatch_server.settings import ServerSettings

# schemathesis parametrizes at collection time, so the app exists before any fixture runs
# (its lazy-fixture mode fails under pytest 9): build it once here, on a throwaway database.
_home = Path(tempfile.mkdtemp(prefix="ratiowatch-fuzz-"))
_settings = ServerSettings(home=_home, database_url=f"sqlite:///{_home / 'fuzz.db'}")
migrate.upgrade(_settings.resolved_database_url())
schema = schemathesis.openapi.from_asgi(
    "/api/v1/openapi.json", create_app(_settings, run_migrations=False, dashboard=False)
)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
    )
