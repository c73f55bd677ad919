"""The sender against a real server: down at the start, slow, or gone."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

import ratiowatch
from tests.support import start_server, wait_until


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stored_steps(url: str, run_id: str) -> list[int]:
    answer = httpx.get(f"{url}/api/v1/runs/{run_id}/series", params={"keys": "train/loss"})
    return answer.json()["series"][0]["steps"]


def _log_and_expect_every_step_stored(
    run: ratiowatch.Run, url: str, *, steps: int, pause: float
) -> None:
    for step in range(steps):
        run.log(step, loss=float(step))
        time.sleep(pause)
    assert run.flush(timeout=60)
    assert _stored_steps(url, run.id) == list(range(steps))
    run.close()
    assert not run.guard.lost


def test_server_down_at_start_then_up_receives_every_step_once_in_order(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    run = ratiowatch.init(project="t", url=url, home=tmp_path / "client")
    started = time.perf_counter()
    for step in range(200):
        run.log(step, loss=float(step))
    assert time.perf_counter() - started < 1.0, "log must not wait for the network"
    assert run.flush(timeout=2) is False
    server = start_server(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "srv", port=port)
    try:
        assert run.flush(timeout=60)
        wait_until(lambda: len(_stored_steps(url, run.id)) == 200, what="all steps stored")
        assert _stored_steps(url, run.id) == list(range(200))
        run.close()
        assert not run.guard.lost
    finally:
        server.stop()


def test_offline_run_is_uploaded_by_sync(tmp_path: Path, live_server) -> None:  # type: ignore[no-untyped-def]
    from ratiowatch.cli import main

    home = tmp_path / "client"
    run = ratiowatch.init(project="t", mode="offline", url=live_server.url, home=home)
    for step in range(50):
        run.log(step, loss=1.0)
    run.close()
    assert main(["sync", str(home / "spool")]) == 0
    assert _stored_steps(live_server.url, run.id) == list(range(50))
    assert main(["sync", str(home / "spool")]) == 0  # nothing left, nothing sent twice
    assert _stored_steps(live_server.url, run.id) == list(range(50))


def test_flush_with_the_server_away_returns_only_once_everything_is_spooled(
    tmp_path: Path,
) -> None:
    """A trainer may be killed right after flush; what flush leaves behind must be on disk."""
    run = ratiowatch.init(project="t", url=f"http://127.0.0.1:{_free_port()}", home=tmp_path)
    for round_ in range(5):
        for step in range(round_ * 300, (round_ + 1) * 300):
            run.log(step, loss=float(step))
        assert run.flush(timeout=30) is False
        assert run._sender is not None
        assert run._sender.spool.pending_records() == (round_ + 1) * 300
    run.close(timeout=1)


def test_a_full_queue_during_slow_requests_keeps_every_step_in_order(
    tmp_path: Path,
    live_server,  # type: ignore[no-untyped-def]
) -> None:
    run = ratiowatch.init(project="t", url=live_server.url, home=tmp_path)
    sender = run._sender
    assert sender is not None and sender.transport is not None
    sender.queue_size, sender.batch_size = 5, 7
    post = sender.transport.post_steps

    def slow_post(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.2)  # the trainer overflows the queue while each request is in flight
        return post(*args, **kwargs)

    sender.transport.post_steps = slow_post  # type: ignore[method-assign]
    _log_and_expect_every_step_stored(run, live_server.url, steps=100, pause=0.002)


def test_an_unwritable_spool_does_not_cost_the_steps_a_live_server_takes(
    tmp_path: Path,
    live_server,  # type: ignore[no-untyped-def]
) -> None:
    run = ratiowatch.init(project="t", url=live_server.url, home=tmp_path)
    assert run._sender is not None

    def disk_full(records: object) -> None:
        raise OSError(28, "No space left on device")

    run._sender.spool.append_encoded = disk_full  # type: ignore[method-assign]
    transport = run._sender.transport
    assert transport is not None
    post = transport.post_steps

    def slow_post(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.2)  # flush must wait for records posted past the disk, not only the spool
        return post(*args, **kwargs)

    transport.post_steps = slow_post  # type: ignore[method-assign]
    _log_and_expect_every_step_stored(run, live_server.url, steps=30, pause=0.0)


def test_records_a_full_spool_refuses_are_counted_and_its_backlog_still_arrives(
    tmp_path: Path,
    live_server,  # type: ignore[no-untyped-def]
) -> None:
    from ratiowatch import guard

    guard.strict(False)
    port = _free_port()
    run = ratiowatch.init(project="t", url=f"http://127.0.0.1:{port}", home=tmp_path)
    sender = run._sender
    assert sender is not None
    for step in range(5):  # server away: these wait in the spool
        run.log(step, loss=float(step))
    assert run.flush(timeout=10) is False
    sender.spool.cap_bytes = 0  # now the spool is at its cap
    for step in range(5, 10):
        run.log(step, loss=float(step))
    assert run.flush(timeout=10) is False
    sender.transport.base = live_server.url + "/api/v1"  # type: ignore[union-attr]
    assert run.flush(timeout=30)
    assert _stored_steps(live_server.url, run.id) == [0, 1, 2, 3, 4]
    assert run.guard.lost["spool_cap"] == 5
    run.close()
