"""Fixtures for the dashboard tests: a real service on a free port, fed through its HTTP API."""

from __future__ import annotations

import logging
import math
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.support import wait_until

QUANTILE_Z = {"p0.1": -3.09, "p1": -2.33, "p5": -1.64, "p25": -0.67, "p50": 0.0}
QUANTILE_Z.update({"p75": 0.67, "p95": 1.64, "p99": 2.33, "p99.9": 3.09})
START_DEADLINE_S = 20.0


def step_record(step: int, *, grad_norm: float | None = None, seed: int = 0) -> dict[str, Any]:
    """One healthy PPO step as the client would send it: ratios near 1, ESS high, KL tiny."""
    rng = random.Random(seed * 100_003 + step)
    sigma = 0.03 + 0.005 * rng.random()
    metrics: dict[str, float] = {
        f"ppo/{stat}": math.exp(z * sigma) for stat, z in QUANTILE_Z.items()
    }
    metrics.update(
        {
            "ppo/count": 4096.0,
            "ppo/nonfinite": 0.0,
            "ppo/ess": 0.985 + 0.01 * rng.random(),
            "ppo/clip_low": 0.001 + 0.002 * rng.random(),
            "ppo/clip_high": 0.002 + 0.002 * rng.random(),
            "ppo/kl_k1": sigma**2 / 2 * (0.8 + 0.4 * rng.random()),
            "ppo/kl_k2": sigma**2 / 2,
            "ppo/kl_k3": sigma**2 / 2 * 1.01,
            "grad/norm": grad_norm if grad_norm is not None else 1.0 + 0.05 * rng.random(),
        }
    )
    return {"step": step, "time": 1_700_000_000.0 + step, "metrics": metrics}


@dataclass
class LiveService:
    """A running service: its base URL and an HTTP client bound to it."""

    url: str
    http: httpx.Client
    dashboard_errors: list[logging.LogRecord]

    def create_run(self, run_id: str, name: str, project: str = "p") -> None:
        body = {"project": project, "name": name, "config": {"clip": [0.2, 0.2]}}
        self.http.put(f"/api/v1/runs/{run_id}", json=body).raise_for_status()

    def post_steps(self, run_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.http.post(f"/api/v1/runs/{run_id}/steps", json={"steps": steps})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(level=logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveService]]:
    """Factory: ``serve(**settings)`` starts the real service in a thread on a free port.

    Dash keeps one current app per process, so a module starts one service and shares it.
    Every service is stopped at module teardown; dashboard callback errors are collected.
    """
    # Imported here so the pure figure tests still run while the server cannot be imported.
    from ratiowatch_server.app import create_app
    from ratiowatch_server.settings import ServerSettings

    stops: list[Callable[[], None]] = []

    def start(**overrides: Any) -> LiveService:
        home = tmp_path_factory.mktemp("service")
        settings = ServerSettings(home=home, database_url=f"sqlite:///{home}/rw.db", **overrides)
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="ratiowatch-test-server", daemon=True)
        thread.start()
        url = _wait_until_up(server, thread)
        records: list[logging.LogRecord] = []
        handler = _Collect(records)
        logging.getLogger("ratiowatch.dashboard").addHandler(handler)
        http = httpx.Client(base_url=url, timeout=10.0)

        def stop() -> None:
            http.close()
            logging.getLogger("ratiowatch.dashboard").removeHandler(handler)
            server.should_exit = True
            thread.join(timeout=10)

        stops.append(stop)
        return LiveService(url=url, http=http, dashboard_errors=records)

    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("RATIOWATCH_") and name != "RATIOWATCH_SCREENSHOT_DIR":
                patch.delenv(name)
        yield start
        for stop in stops:
            stop()


def _wait_until_up(server: uvicorn.Server, thread: threading.Thread) -> str:
    """Poll with a deadline: first for the bound socket (port 0), then for ``/healthz``."""
    wait_until(
        lambda: server.started or not thread.is_alive(), START_DEADLINE_S, "uvicorn to start"
    )
    assert server.started, "the test service thread died during startup"
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _healthy(url), START_DEADLINE_S, f"{url}/healthz")
    return url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def make_step() -> Callable[..., dict[str, Any]]:
    """Factory for one healthy step record (``grad_norm=`` overrides the gradient norm)."""
    return step_record


@pytest.fixture(scope="session")
def screenshot_dir() -> Path | None:
    """Where to save screenshots for a visual check, when ``RATIOWATCH_SCREENSHOT_DIR`` is set.

    Session-scoped so it reads the variable before the per-test fixture clears ``RATIOWATCH_*``.
    """
    value = os.environ.get("RATIOWATCH_SCREENSHOT_DIR")
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path
