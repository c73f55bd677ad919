"""The gate in front of numba's thread pool, shared by the parallel host kernels."""

from __future__ import annotations

import os
import threading

__all__ = ["POOL", "PoolGate"]


class PoolGate:
    """Lets one thread of one process at a time into numba's thread pool; others run serially.

    numba's fallback ``workqueue`` threading layer aborts the process when two threads launch
    parallel kernels at once, and GNU OpenMP aborts (or hangs) in a child forked after its parent
    used it: a second ``log`` call, or one in a forked child, must not do either.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = 0  # the pid that first used the pool

    def acquire(self) -> bool:
        pid = os.getpid()
        if self._owner == 0:
            self._owner = pid
        return self._owner == pid and self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()


POOL = PoolGate()
