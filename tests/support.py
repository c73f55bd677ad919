"""Test helpers: a real server on a free loopback port, and polling with a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LiveServer:
    url: str
    database_url: str
    stop: Callable[[], None]


def wait_until(
    condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def start_server(
    database_url: str, home: Path, port: int = 0, dashboard: bool = False
) -> LiveServer:
    """The real service under uvicorn on a loopback port, in a background thread."""
    import uvicorn

    from ratiowatch_server.app import create_app
    from ratiowatch_server.settings import ServerSettings

    settings = ServerSettings(home=home, database_url=database_url)
    app = create_app(settings, dashboard=dashboard)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn to start")
    bound = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return LiveServer(url=f"http://127.0.0.1:{bound}", database_url=database_url, stop=stop)
