"""The background sender: one bounded queue, one daemon thread, the spool behind both.

Ordering rule: while the spool holds anything, new records go to the spool too, and a batch that
fails to send is moved to the spool together with everything still queued. Records therefore reach
the server in the order they were logged, whether they travelled through memory or through disk.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ratiowatch.guard import Guard
from ratiowatch.records import RunInfo, StepRecord
from ratiowatch.spool import Spool, SpoolFull
from ratiowatch.transport import HttpTransport, RejectedError, TransportError, UnknownRunError

AlertSink = Callable[[list[dict[str, Any]]], None]


class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog), reset on success."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2**self.failures))

    def reset(self) -> None:
        self.failures = 0


class Sender:
    """Moves step records from ``submit`` to the server without ever blocking the caller."""

    def __init__(
        self,
        info: RunInfo,
        spool: Spool,
        guard: Guard,
        *,
        transport: HttpTransport | None,
        on_alerts: AlertSink,
        queue_size: int = 10_000,
        batch_size: int = 500,
        linger: float = 0.25,
    ) -> None:
        self.info = info
        self.spool = spool
        self.guard = guard
        self.transport = transport
        self.on_alerts = on_alerts
        self.batch_size = batch_size
        self.linger = linger
        self._queue: queue.Queue[StepRecord] = queue.Queue(maxsize=queue_size)
        self._spool_first = threading.Lock()
        # Mirrors spool.pending() without touching the disk on every submit; changed under the lock.
        self._spooling = spool.pending()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._registered = False
        self._backoff = Backoff()
        self._thread: threading.Thread | None = None
        if transport is not None:
            self._thread = threading.Thread(
                target=self._loop, name=f"ratiowatch-sender-{info.run_id}", daemon=True
            )
            self._thread.start()

    def submit(self, record: StepRecord) -> None:
        """Queue a record; to the spool when offline, when the spool is draining, or queue full."""
        with self._spool_first:
            if self.transport is not None and not self._spooling:
                try:
                    self._queue.put_nowait(record)
                    return
                except queue.Full:
                    pass
            self._to_spool([record], reason_if_lost="queue_full_spool_failed")
        self._wake.set()

    def pending(self) -> int:
        """Records not yet acknowledged by the server (queued, in flight or spooled)."""
        spooled = self.spool.pending_records() if self._spooling else 0
        return self._queue.qsize() + spooled + (1 if self._busy else 0)

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until everything is sent, or the server is unreachable, or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._thread is not None and self._thread.is_alive():
                if self._settled():
                    return True
                if self._backoff.failures > 0 and not self._busy:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(timeout=0.05 if remaining is None else min(remaining, 0.05))
        return self._settled()

    def _settled(self) -> bool:
        """Nothing queued, nothing in flight (``task_done`` comes after send), nothing spooled."""
        return self._queue.unfinished_tasks == 0 and not self._spooling

    def stop(self, timeout: float) -> None:
        """Stop the thread; anything still queued goes to the spool for the next sync."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.guard.contained("sender.stop"):
            self._drain_queue_to_spool([])

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.guard.contained("sender"):
                self._step()

    def _step(self) -> None:
        if self._spooling:
            records, cursor = self.spool.read(self.batch_size)
            if not records or self._send(records):
                with self._spool_first:
                    self.spool.ack(cursor)
                    self._spooling = self.spool.pending()
            return
        records = self._take_batch()
        try:
            if records and not self._send(records):
                self._drain_queue_to_spool(records)
        finally:
            for _ in records:
                self._queue.task_done()

    def _take_batch(self) -> list[StepRecord]:
        with self._idle:
            self._idle.notify_all()
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.linger
        while len(batch) < self.batch_size and not self._stop.is_set():
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _send(self, records: Sequence[StepRecord]) -> bool:
        """True when the server has the records (stored, duplicate, or rejected and counted)."""
        assert self.transport is not None
        self._busy = True
        try:
            if not self._registered:
                self.transport.put_run(self.info)
                self._registered = True
            try:
                answer = self.transport.post_steps(self.info.run_id, records, dict(self.guard.lost))
            except UnknownRunError:
                self.transport.put_run(self.info)
                answer = self.transport.post_steps(self.info.run_id, records, dict(self.guard.lost))
        except RejectedError:
            self.guard.count_lost("rejected_by_server", len(records))
            self._backoff.reset()
            return True
        except (TransportError, UnknownRunError):
            self._registered = False
            self._stop.wait(self._backoff.next_delay())
            return False
        finally:
            self._busy = False
        self._backoff.reset()
        if answer.alerts:
            self.on_alerts(answer.alerts)
        return True

    def _drain_queue_to_spool(self, head: list[StepRecord]) -> None:
        with self._spool_first:
            queued: list[StepRecord] = []
            while True:
                try:
                    queued.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._to_spool([*head, *queued], reason_if_lost="spool_failed")
            for _ in queued:
                self._queue.task_done()

    def _to_spool(self, records: list[StepRecord], reason_if_lost: str) -> None:
        try:
            self.spool.append(records)
            self._spooling = True
        except SpoolFull:
            self.guard.count_lost("spool_cap", len(records))
        except OSError:
            self.guard.count_lost(reason_if_lost, len(records))
