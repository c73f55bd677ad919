"""The background sender: one bounded queue, one daemon thread, and the spool as a write-ahead log.

``submit`` only appends to a deque (atomic under the GIL, and a tenth of the cost of a
``queue.Queue``, whose lock and condition every ``log`` would pay): the trainer's thread never
touches the network and, unless the queue is full, never the disk, and it wakes nobody. The sender
thread looks every ``linger`` seconds (and at once on ``flush``): it appends what is queued to the
spool, durably, then posts from the spool's head and acknowledges what the server stored. One
ordered log on disk makes the order of arrival the order of logging whatever fails and when, and
lets a full queue spill to the same log without overtaking anything. A killed trainer loses what
was still queued: normally the last ``linger`` seconds, more while a request hangs (the sender
spools between requests, and a request may take the transport's timeout).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ratiowatch.guard import Guard
from ratiowatch.records import RunInfo
from ratiowatch.spool import Spool, SpoolFull
from ratiowatch.step import ClosedStep
from ratiowatch.transport import HttpTransport, RejectedError, TransportError, UnknownRunError

AlertSink = Callable[[list[dict[str, Any]]], None]
GIL_SLICE = 0.0005  # seconds of encoding between hand-overs of the GIL and of the spool lock


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
    """Moves step records from ``submit`` through the spool to the server, never blocking the
    caller on the network."""

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
        self._in_flight = 0  # taken from the queue, not yet in the spool
        self._refused = 0  # refused by the disk, not yet posted or counted lost
        # Held from taking records off the queue until they are in the spool (never across a
        # request), so that whoever spools next cannot overtake them.
        self._spool_lock = threading.Lock()
        # Mirrors spool.pending() without touching the disk on every step.
        self._unsent = spool.pending()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._registered = False
        self._backoff = Backoff()
        self._thread = threading.Thread(
            target=self._loop, name=f"ratiowatch-sender-{info.run_id}", daemon=True
        )
        self._thread.start()

    def submit(self, closed: ClosedStep) -> None:
        """Enqueue. Only when the queue is full (the sender thread is far behind) does the caller
        move the oldest records to the spool itself, one slice's worth: none is overtaken, no
        single call pays for many, and it waits at most for the sender's slice, never for the
        network."""
        if len(self._queue) >= self.queue_size:
            self._spool_or_count(self.batch_size)
        self._queue.append(closed)

    def pending(self) -> int:
        """Records not yet acknowledged by the server (queued, being spooled, or spooled)."""
        spooled = self.spool.pending_records() if self._unsent else 0
        return len(self._queue) + self._in_flight + self._refused + spooled

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until the server has everything, retrying at once if it was away.

        False at ``timeout``, or as soon as that retry fails: what is unsent is already in the
        durable spool, so neither a flush nor the close at interpreter exit waits on a server
        that is gone.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        failures_before = self._backoff.failures
        self._backoff.retry_now()
        while self._thread.is_alive():
            if self._settled():
                return True
            if self._backoff.failures > failures_before and not self._in_memory():
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
            while self._queue:
                self._spool_or_count(len(self._queue), budget=math.inf)

    def _settled(self) -> bool:
        """Nothing in memory, and nothing spooled unless offline, where the spool is the
        destination."""
        return not self._in_memory() and not (self._unsent and self.transport is not None)

    def _in_memory(self) -> bool:
        # Records are counted in flight before they leave the queue, and refused before they
        # stop being in flight: always seen in one place or another.
        return bool(self._queue) or self._in_flight > 0 or self._refused > 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.guard.contained("sender"):
                self._step()

    def _step(self) -> None:
        online = self.transport is not None
        if not (online and self._unsent and self._backoff.ready()) and (
            len(self._queue) < self.batch_size
        ):
            self._wake.wait(self.linger)
            self._wake.clear()
        moved = 0
        while self._queue and moved < self.batch_size:
            taken, refused = self._spool_slice(self.batch_size - moved)
            moved += taken
            if refused is not None:
                self._rescue(*refused)
            time.sleep(0)  # hands the GIL to a trainer thread waiting for it, if there is one
        if online and self._unsent and self._backoff.ready():
            self._send_spool_head()

    def _spool_slice(
        self, most: int, budget: float = GIL_SLICE
    ) -> tuple[int, tuple[list[bytes], str] | None]:
        """Move up to ``most`` of the oldest queued records to the spool, for at most ``budget``
        seconds of encoding (at least one record), in one durable append.

        Returns how many records left the queue, and those the disk refused (full, read-only,
        at the cap) with the reason, for the caller to rescue or count as lost. The lock is held
        from the first record leaving the queue to the append, so nothing overtakes; short
        slices keep the trainer's waits for the lock and for the GIL short (CPython lets a
        thread that wants the GIL wait a whole switch interval, 5 ms).
        """
        with self._spool_lock:
            taken, encoded = 0, []
            try:
                started = time.perf_counter()
                while self._queue and taken < most:
                    self._in_flight += 1  # before it leaves the queue: see _in_memory
                    line = self._encode(self._queue.popleft())
                    taken += 1
                    if line is not None:
                        encoded.append(line)
                    if time.perf_counter() - started >= budget:
                        break
                refused = self._append(encoded)
                if refused is not None:
                    self._refused += len(encoded)
            finally:
                self._in_flight = 0
        return taken, None if refused is None else (encoded, refused)

    def _spool_or_count(self, most: int, budget: float = GIL_SLICE) -> None:
        """``_spool_slice``, counting what the disk refuses as lost (the trainer's thread and
        ``stop`` never post)."""
        _, refused = self._spool_slice(most, budget)
        if refused is not None:
            self.guard.count_lost(refused[1], len(refused[0]))
            self._settle_refused(len(refused[0]))

    def _encode(self, closed: ClosedStep) -> bytes | None:
        """The step's record, finalised and encoded; None (counted lost) if that fails."""
        with self.guard.contained("encoding a step record"):
            return closed.to_record().encode()
        self.guard.count_lost("unencodable")
        return None

    def _append(self, encoded: list[bytes]) -> str | None:
        """Append to the spool; None, or why the disk refused."""
        if not encoded:
            return None
        try:
            self.spool.append_encoded(encoded)
        except SpoolFull:
            return "spool_cap"
        except OSError:
            return "spool_unwritable"
        self._unsent = True
        return None

    def _rescue(self, encoded: list[bytes], reason: str) -> None:
        """Post records the disk refused, so that a broken disk does not cost what a healthy
        server can take; only when that overtakes nothing (nothing unsent waits in the spool)
        and the server is not being backed off from. Otherwise they are lost, and counted."""
        try:
            postable = self.transport is not None and not self._unsent and self._backoff.ready()
            if not (postable and self._send(encoded)):
                self.guard.count_lost(reason, len(encoded))
        finally:
            self._settle_refused(len(encoded))

    def _settle_refused(self, count: int) -> None:
        with self._spool_lock:
            self._refused -= count

    def _send_spool_head(self) -> None:
        encoded, cursor = self.spool.read_encoded(self.batch_size)
        if not encoded or self._send(encoded):
            self.spool.ack(cursor)
            with self._spool_lock:  # a trainer's spill may be setting it meanwhile
                self._unsent = self.spool.pending()

    def _send(self, encoded: Sequence[bytes]) -> bool:
        """True when the server has the records (stored, duplicate, or rejected and counted)."""
        try:
            answer = self._post(encoded)
        except RejectedError:
            self.guard.count_lost("rejected_by_server", len(encoded))
            return True
        except (TransportError, UnknownRunError):
            self._registered = False
            self._backoff.failed()
            return False
        self._backoff.reset()
        if answer.alerts:
            self.on_alerts(answer.alerts)
        return True

    def _post(self, encoded: Sequence[bytes]) -> Any:
        assert self.transport is not None
        if not self._registered:
            self.transport.put_run(self.info)
            self._registered = True
        losses = dict(self.guard.lost)
        try:
            return self.transport.post_steps(self.info.run_id, encoded, losses)
        except UnknownRunError:
            self.transport.put_run(self.info)
            return self.transport.post_steps(self.info.run_id, encoded, losses)
