"""The background sender: one bounded queue, one daemon thread, the spool behind both.

``submit`` only appends to a deque (atomic under the GIL, and a tenth of the cost of a
``queue.Queue``, whose lock and condition every ``log`` would pay): the trainer's thread never
touches the network and, unless the queue is full, never the disk, and it wakes nobody. The sender
thread looks every ``linger`` seconds (and at once on ``flush``) and alone moves records on.
Ordering rule: while the spool holds anything, the sender appends new records to the spool and
sends from its head, so records reach the server in the order they were logged, whether they
travelled through memory or disk.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ratiowatch.guard import Guard
from ratiowatch.records import RunInfo, StepRecord
from ratiowatch.spool import Spool, SpoolFull
from ratiowatch.step import ClosedStep
from ratiowatch.transport import HttpTransport, RejectedError, TransportError, UnknownRunError

AlertSink = Callable[[list[dict[str, Any]]], None]


class Backoff:
    """Exponential backoff with full jitter, reset on success."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0
        self.retry_at = 0.0

    def failed(self) -> None:
        self.failures += 1
        delay = random.uniform(0, min(self.cap, self.base * 2**self.failures))
        self.retry_at = time.monotonic() + delay

    def reset(self) -> None:
        self.failures, self.retry_at = 0, 0.0

    def retry_now(self) -> None:
        self.retry_at = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self.retry_at


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
        linger: float = 0.05,
    ) -> None:
        self.info = info
        self.spool = spool
        self.guard = guard
        self.transport = transport
        self.on_alerts = on_alerts
        self.batch_size = batch_size
        self.linger = linger
        self.queue_size = queue_size
        self._queue: deque[ClosedStep] = deque()
        self._in_flight = 0  # taken from the queue, neither acknowledged nor spooled yet
        # Held while a batch is out of the queue and not yet sent or spooled: records written to
        # the spool meanwhile would overtake it.
        self._batch_lock = threading.Lock()
        self._wake = threading.Event()
        # Mirrors spool.pending() without touching the disk on every step.
        self._spooling = spool.pending()
        self._stop = threading.Event()
        self._registered = False
        self._backoff = Backoff()
        self._thread = threading.Thread(
            target=self._loop, name=f"ratiowatch-sender-{info.run_id}", daemon=True
        )
        self._thread.start()

    def submit(self, closed: ClosedStep) -> None:
        """Enqueue. Only when the queue is full (the sender thread is far behind) does the caller
        write the spool itself: the whole queue, then this record, so none overtakes another.

        While a batch is in flight that would overtake it, so the queue may then grow to twice
        its size for as long as the request lasts (at most the transport's timeout); past that,
        records are counted as lost rather than block the trainer.
        """
        if len(self._queue) < self.queue_size:
            self._queue.append(closed)
        elif self._batch_lock.acquire(blocking=False):
            try:
                self._spool_queue(closed)
            finally:
                self._batch_lock.release()
        elif len(self._queue) < 2 * self.queue_size:
            self._queue.append(closed)
        else:
            self.guard.count_lost("queue_full")

    def pending(self) -> int:
        """Records not yet acknowledged by the server (queued, in flight or spooled)."""
        spooled = self.spool.pending_records() if self._spooling else 0
        return len(self._queue) + self._in_flight + spooled

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until the server has everything, retrying at once if it was away.

        False at ``timeout``, or as soon as that retry fails: what is unsent is already in the
        durable spool, so neither a flush nor the close at interpreter exit waits on a server
        that is gone.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        failures_before = self._backoff.failures
        self._backoff.retry_now()
        self._wake.set()
        while self._thread.is_alive():
            if self._settled():
                return True
            if self._backoff.failures > failures_before and not self._unsettled_in_memory():
                return False  # unreachable, and everything queued is now in the spool
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._wake.set()
            self._stop.wait(0.01)
        return self._settled()

    def stop(self, timeout: float) -> None:
        """Stop the thread; anything still queued goes to the spool for the next sync."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        with self.guard.contained("sender.stop"):
            if self._batch_lock.acquire(timeout=timeout):  # else a request outlived the join
                try:
                    self._spool_queue()
                finally:
                    self._batch_lock.release()
            elif self._queue:
                self.guard.count_lost("stopped_mid_request", len(self._queue))

    def _settled(self) -> bool:
        """Nothing queued or in flight, and nothing spooled unless offline, where the spool is the
        destination."""
        unsent = self._spooling and self.transport is not None
        return not self._unsettled_in_memory() and not unsent

    def _unsettled_in_memory(self) -> bool:
        # The sender counts a batch in flight before taking it from the queue, so a record is
        # always seen in one or the other.
        return bool(self._queue) or self._in_flight > 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.guard.contained("sender"):
                self._step()

    def _step(self) -> None:
        online = self.transport is not None
        drain_spool = online and self._spooling and self._backoff.ready()
        if not drain_spool and len(self._queue) < self.batch_size:
            self._wake.wait(self.linger)
            self._wake.clear()
        with self._batch_lock:
            closed = self._take_batch()
            try:
                records = [item.to_record() for item in closed]
                if self._spooling:
                    self._to_spool(records)
                    if drain_spool:
                        self._send_spool_head()
                elif records and (not online or not self._send(records)):
                    self._to_spool(records)
            finally:
                self._in_flight = 0

    def _take_batch(self) -> list[ClosedStep]:
        count = min(len(self._queue), self.batch_size)
        self._in_flight = count
        return [self._queue.popleft() for _ in range(count)]

    def _send_spool_head(self) -> None:
        records, cursor = self.spool.read(self.batch_size)
        if not records or self._send(records):
            self.spool.ack(cursor)
            self._spooling = self.spool.pending()

    def _send(self, records: Sequence[StepRecord]) -> bool:
        """True when the server has the records (stored, duplicate, or rejected and counted)."""
        try:
            answer = self._post(records)
        except RejectedError:
            self.guard.count_lost("rejected_by_server", len(records))
            return True
        except (TransportError, UnknownRunError):
            self._registered = False
            self._backoff.failed()
            return False
        self._backoff.reset()
        if answer.alerts:
            self.on_alerts(answer.alerts)
        return True

    def _post(self, records: Sequence[StepRecord]) -> Any:
        assert self.transport is not None
        if not self._registered:
            self.transport.put_run(self.info)
            self._registered = True
        losses = dict(self.guard.lost)
        encoded = [record.encode() for record in records]
        try:
            return self.transport.post_steps(self.info.run_id, encoded, losses)
        except UnknownRunError:
            self.transport.put_run(self.info)
            return self.transport.post_steps(self.info.run_id, encoded, losses)

    def _spool_queue(self, *newest: ClosedStep) -> None:
        """Everything queued, then ``newest``, to the spool in order (under ``_batch_lock``)."""
        queued = self._take_batch()
        while queued:
            try:
                self._to_spool([item.to_record() for item in queued])
            finally:
                self._in_flight = 0
            queued = self._take_batch()
        self._to_spool([item.to_record() for item in newest])

    def _to_spool(self, records: list[StepRecord]) -> None:
        if not records:
            return
        try:
            self.spool.append(records)
            self._spooling = True
        except SpoolFull:
            self.guard.count_lost("spool_cap", len(records))
        except OSError:
            self.guard.count_lost("spool_unwritable", len(records))
