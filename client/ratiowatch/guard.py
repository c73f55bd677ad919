"""The client's one containment boundary, and the ledger of everything lost.

Nothing after ``init`` may raise into the trainer: every public ``Run`` method, every worker job
and every user callback runs inside :func:`Guard.contained`. An exception there is logged once per
(place, type) and counted. Tests switch on :func:`strict` so a swallowed bug fails CI instead of
hiding.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from types import TracebackType

logger = logging.getLogger("ratiowatch")

_strict = False


def strict(enabled: bool) -> None:
    """Re-raise contained exceptions (for tests only): a hidden bug must fail the test."""
    global _strict
    _strict = enabled


class Guard:
    """Counts contained errors and lost records, each by reason; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: set[tuple[str, type[BaseException]]] = set()
        self.errors: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()

    def contained(self, where: str) -> _Contained:
        """``with guard.contained("log"): ...`` swallows, logs once and counts any exception."""
        return _Contained(self, where)

    def _swallow(self, where: str, exc: Exception) -> bool:
        with self._lock:
            self.errors[where] += 1
            first = (where, type(exc)) not in self._logged
            self._logged.add((where, type(exc)))
        if first:
            logger.error("ratiowatch: internal error in %s (contained)", where, exc_info=exc)
        return not _strict

    def count_lost(self, reason: str, records: int = 1) -> None:
        """Record that ``records`` step records were lost for ``reason``, and say so once."""
        with self._lock:
            first = reason not in self.lost
            self.lost[reason] += records
        if first:
            logger.warning("ratiowatch: step records are being lost (%s)", reason)

    def summary(self) -> str | None:
        """One line for ``close()``; None when nothing was lost and nothing failed."""
        with self._lock:
            if not self.lost and not self.errors:
                return None
            parts = [f"{count} lost ({reason})" for reason, count in self.lost.items()]
            parts += [f"{count} internal errors in {where}" for where, count in self.errors.items()]
        return "ratiowatch: " + ", ".join(parts)


class _Contained:
    """The context manager behind :meth:`Guard.contained`; a class rather than a generator
    because it wraps every ``log`` call, and this costs a fifth as much."""

    __slots__ = ("guard", "where")

    def __init__(self, guard: Guard, where: str) -> None:
        self.guard, self.where = guard, where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if isinstance(exc, Exception):
            return self.guard._swallow(self.where, exc)
        return False
