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
from collections.abc import Iterator
from contextlib import contextmanager

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

    @contextmanager
    def contained(self, where: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            with self._lock:
                self.errors[where] += 1
                first = (where, type(exc)) not in self._logged
                self._logged.add((where, type(exc)))
            if first:
                logger.error("ratiowatch: internal error in %s (contained)", where, exc_info=exc)
            if _strict:
                raise

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
