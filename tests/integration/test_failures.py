"""Failures a week-long run meets: the server killed, slow or failing, the trainer killed."""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import ratiowatch
from tests.support import start_server, wait_until
from tests.support_process import ServerProcess, free_port

SCALARS = {f"s{i}": float(i) for i in range(40)}


def _stored_steps(url: str, run_id: str) -> list[int]:
    answer = httpx.get(f"{url}/api/v1/runs/{run_id}/series", params={"keys": "train/s0"})
    return answer.json()["series"][0]["steps"] if answer.status_code == 200 else []


def test_server_sigkilled_and_restarted_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server = ServerProcess(free_port(), f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "srv")
    server.start()
    run = ratiowatch.init(project="t", url=server.url, home=tmp_path / "client")
    try:
        for step in range(300):
            run.log(step, **SCALARS)
            if step == 100:
                run.flush(timeout=20)
                acknowledged = _stored_steps(server.url, run.id)
                server.kill()
            if step == 200:
                server.start()
            time.sleep(0.002)
        assert run.flush(timeout=60)
        assert _stored_steps(server.url, run.id) == list(range(300))
        assert set(acknowledged) <= set(range(101)) and len(acknowledged) >= 100
        run.close()
        assert not run.guard.lost
    finally:
        server.stop()


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    """Answers every request slowly, with 503 or 429."""

    statuses = iter([503, 429] * 1000)

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.5)
        self.send_response(next(self.statuses))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def unhealthy_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_slow_failing_server_never_slows_log(unhealthy_url: str, tmp_path: Path) -> None:
    run = ratiowatch.init(project="t", url=unhealthy_url, home=tmp_path)
    durations = []
    for step in range(2000):
        started = time.perf_counter()
        run.log(step, **SCALARS)
        durations.append(time.perf_counter() - started)
    run.close(timeout=2)
    # Not a benchmark: a blocked call would take the server's 0.5 s; the spool's fsync a few ms.
    assert max(durations) < 0.1, max(durations)
    assert run._sender is not None and run._sender.spool.pending_records() == 2000


TRAINER = textwrap.dedent(
    """
    import os, signal, sys, ratiowatch
    run = ratiowatch.init(project="t", url=sys.argv[1], run_id="killed-run", home=sys.argv[2])
    for step in range(150):
        run.log(step, loss=float(step))
    run.flush(timeout=10)   # the server is away: everything ends up in the spool
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_trainer_killed_then_sync_uploads_the_rest(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "client"
    trainer = subprocess.run(
        [sys.executable, "-c", TRAINER, f"http://127.0.0.1:{port}", str(home)], check=False
    )
    assert trainer.returncode == -9
    server = start_server(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "srv", port=port)
    try:
        synced = subprocess.run(
            [sys.executable, "-m", "ratiowatch.cli", "sync", str(home / "spool")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "150 steps uploaded" in synced.stdout
        answer = httpx.get(
            f"{server.url}/api/v1/runs/killed-run/series", params={"keys": "train/loss"}
        )
        assert answer.json()["series"][0]["steps"] == list(range(150))
    finally:
        server.stop()


def test_next_init_of_the_same_run_uploads_what_was_left(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "client"
    first = ratiowatch.init(
        project="t", url=f"http://127.0.0.1:{port}", run_id="resumed", home=home
    )
    for step in range(50):
        first.log(step, s0=1.0)
    first.close(timeout=1)
    server = start_server(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "srv", port=port)
    try:
        second = ratiowatch.init(project="t", url=server.url, run_id="resumed", home=home)
        for step in range(50, 60):
            second.log(step, s0=1.0)
        assert second.flush(timeout=30)
        wait_until(lambda: len(_stored_steps(server.url, "resumed")) == 60, what="60 steps")
        assert _stored_steps(server.url, "resumed") == list(range(60))
        second.close()
    finally:
        server.stop()
