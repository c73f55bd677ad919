"""Shared fixtures: a clean environment, strict containment, and a real server on a free port."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import ratiowatch
from ratiowatch import guard
from tests.support import LiveServer, start_server


def pytest_configure(config: pytest.Config) -> None:
    _drop_stale_numba_kernels()


def _drop_stale_numba_kernels() -> None:
    """Deletes the package's cached numba kernels when any of its sources changed since.

    numba keys a cached kernel on its own file only, while the kernels inline helpers and freeze
    constants from other modules (numba_math, stats_numba_block, sketch, stats, khat): after an
    edit there, the tests would run the old code (numba_math's docstring).
    """
    package = Path(ratiowatch.__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")):
        digest.update(source.read_bytes())
    cache = package / "__pycache__"
    stamp = cache / "numba-kernels.sha256"
    if stamp.is_file() and stamp.read_text() == digest.hexdigest():
        return
    try:
        for kernel in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            kernel.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only install: numba caches elsewhere, or not at all
        pass


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's RATIOWATCH_* variables or writes under their home."""
    for name in list(os.environ):
        if name.startswith("RATIOWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RATIOWATCH_HOME", str(tmp_path / "home"))


@pytest.fixture(autouse=True)
def _strict_guard() -> Iterator[None]:
    """A bug the client's guard would swallow in production fails the test instead."""
    guard.strict(True)
    yield
    guard.strict(False)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The service's database; tests/server overrides it to run on Postgres too."""
    return f"sqlite:///{tmp_path / 'server.db'}"


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(database_url, tmp_path / "server-home")
    yield server
    server.stop()


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url + "/api/v1", timeout=10) as client:
        yield client
