"""``init`` and ``Run``: the two lines a trainer adds.

Invalid arguments raise (``ratiowatch.errors``), before anything is queued; nothing else ever
raises into the trainer: every public method runs inside the guard.

Under ``torch.distributed`` every rank computes its statistics and merges them into rank 0's at
each step close (``ratiowatch.distributed``); only rank 0 has a sender and a spool. So every rank
must call ``log`` with the same steps and ``flush``/``close`` at the same points.
"""

from __future__ import annotations

import atexit
import logging
import numbers
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ratiowatch import settings as client_settings
from ratiowatch.distributed import RankMerger, process_rank
from ratiowatch.errors import InvalidArgumentError, InvalidTypeError
from ratiowatch.guard import Guard
from ratiowatch.records import RunInfo
from ratiowatch.spool import Spool
from ratiowatch.stats import compute_step_partials
from ratiowatch.step import ClosedStep, StepAccumulator
from ratiowatch.transport import HttpTransport
from ratiowatch.worker import Sender

logger = logging.getLogger("ratiowatch")

AlertCallback = Callable[[dict[str, Any]], None]
CLOSE_TIMEOUT = 10.0
ARRAY_ARGUMENTS = ("logp", "logp_old", "logp_behavior", "mask", "advantages")

_live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_process_hooks_installed = False


class AlertDispatcher:
    """Hands each alert the server reports to the user's callbacks, each contained."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.callbacks: list[AlertCallback] = []

    def __call__(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            for callback in list(self.callbacks):
                with self.guard.contained("on_alert callback"):
                    callback(alert)


class Run:
    """A run being logged. Create it with :func:`ratiowatch.init`."""

    def __init__(
        self,
        info: RunInfo,
        *,
        clip: tuple[float, float],
        sender: Sender | None,
        guard: Guard,
        alerts: AlertDispatcher,
        enabled: bool = True,
    ) -> None:
        """``sender`` None with ``enabled``: a rank other than 0, which computes and merges only."""
        self.info = info
        self.id = info.run_id
        self.clip = clip
        self.guard = guard
        self._sender = sender
        self._accumulator = StepAccumulator()
        self._ranks = RankMerger(guard)
        self._lock = threading.Lock()
        self._alerts = alerts
        self._contained_log = guard.contained("log")  # reused: ``log`` is the hot path
        self._closed = not enabled  # also set in a forked child (_forget_in_child)
        _live_runs.add(self)

    def log(self, step: int, **values: Any) -> None:
        """Record tensors and scalars for ``step``; calls with the same step merge into one.

        Keywords: the arrays ``logp``, ``logp_old``, ``logp_behavior``, ``mask``, ``advantages``
        (DESIGN section 2), ``grad_norm``, and any other name is a user scalar: a number (bools
        count as 0 or 1; 0-d arrays and tensors are read with ``item``).

        The named keywords are taken from ``values`` rather than declared: CPython matches each
        keyword argument against every declared keyword-only parameter, and with 40 scalars that
        alone cost more than the rest of the call.
        """
        if self._closed:
            return
        step = _check_step(step)
        arrays = {name: values.pop(name) for name in ARRAY_ARGUMENTS if name in values}
        grad_norm = values.pop("grad_norm", None)
        numbers_in = _check_scalars(values)
        norm = None if grad_norm is None else _to_float("grad_norm", grad_norm)
        partials = compute_step_partials(**arrays, clip=self.clip) if arrays else {}
        with self._contained_log, self._lock:
            finished = self._accumulator.add(step, partials, norm, numbers_in)
            if finished is not None:
                self._submit(finished)

    def on_alert(self, callback: AlertCallback) -> None:
        """Call ``callback(alert)`` (in the sender thread) for each new alert on this run."""
        self._alerts.callbacks.append(callback)

    def flush(self, timeout: float | None = None) -> bool:
        """Finalise the open step and wait for the server to have everything; True if it has.

        Ranks other than 0 send nothing: for them, True once their part is merged into rank 0's.
        """
        if self._closed:
            return False
        with self.guard.contained("flush"):
            with self._lock:
                self._submit(self._accumulator.finish())
            return True if self._sender is None else self._sender.wait_idle(timeout)
        return False

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Flush within ``timeout``, stop the sender; what is unsent stays in the spool."""
        if self._closed:
            return
        with self.guard.contained("close"):
            self.flush(timeout)
            self._closed = True
            if self._sender is not None:
                self._stop_sender(self._sender, timeout)
            summary = self.guard.summary()
            if summary:
                logger.warning(summary)

    def _stop_sender(self, sender: Sender, timeout: float) -> None:
        sender.stop(timeout=max(1.0, timeout / 2))
        left = sender.pending()
        if left:
            logger.warning(
                "ratiowatch: %d step records for run %s remain in %s; "
                "upload them with `ratiowatch sync`",
                left,
                self.id,
                sender.spool.directory,
            )

    def _submit(self, closed: ClosedStep | None) -> None:
        """Send a closed step (None: flushing with no step open), merged across ranks first.

        Under torch.distributed the merge is a collective, so it runs here, in the trainer's
        thread, on every rank alike, never in the sender thread.
        """
        merged = self._ranks.merge(closed)
        if merged is not None and self._sender is not None:
            self._sender.submit(merged)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def init(
    project: str,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    mode: str | None = None,
    clip: Sequence[float] = (0.2, 0.2),
    token: str | None = None,
    run_id: str | None = None,
    tags: Sequence[str] = (),
    home: str | os.PathLike[str] | None = None,
) -> Run:
    """Start (or, with a known ``run_id``, resume) a run; raises only on invalid arguments."""
    if not isinstance(project, str) or not project.strip():
        raise InvalidArgumentError(f"project is {project!r}; expected a non-empty string")
    clip_range = _check_clip(clip)
    resolved = client_settings.resolve(url=url, mode=mode, token=token, home=home)
    run_id = run_id or uuid.uuid4().hex[:16]
    if not run_id.replace("-", "").replace("_", "").isalnum() or len(run_id) > 64:
        raise InvalidArgumentError(
            f"run_id is {run_id!r}; expected up to 64 letters, digits, - or _"
        )
    full_config = {"clip": list(clip_range), **dict(config or {})}
    info = RunInfo(run_id, project, name or run_id, full_config, tuple(tags))
    guard = Guard()
    alerts = AlertDispatcher(guard)
    sender = None
    enabled = resolved.mode != "disabled"
    if enabled:
        _install_process_hooks()
    if enabled and process_rank() == 0:  # other ranks merge into rank 0's records (distributed.py)
        spool = Spool.for_run(resolved.spool_root, info, resolved.url)
        online = resolved.mode == "online"
        transport = HttpTransport(resolved.url, token=resolved.token) if online else None
        sender = Sender(info, spool, guard, transport=transport, on_alerts=alerts)
    return Run(info, clip=clip_range, sender=sender, guard=guard, alerts=alerts, enabled=enabled)


def _check_clip(clip: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(eps) for eps in clip)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"clip is {clip!r}; expected (eps_low, eps_high)") from exc
    if not (0 < low < 1 and high > 0):
        raise InvalidArgumentError(f"clip is {clip!r}; expected 0 < eps_low < 1 and eps_high > 0")
    return low, high


def _check_step(step: Any) -> int:
    if type(step) is int and step >= 0:  # the common case, without the ABC checks (hot path)
        return step
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or int(step) < 0:
        raise InvalidArgumentError(f"step is {step!r}; expected a non-negative integer")
    return int(step)


def _to_float(name: str, value: Any) -> float:
    if type(value) is float:  # the common case, without the ABC checks below (hot path)
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} is {type(value).__name__}; expected a real number")
    return float(value)


def _check_scalars(scalars: dict[str, Any]) -> Mapping[str, float]:
    """The scalars, each a real number; the first that is not is named in the exception.

    The hot path is one C-level ``sum``: it is a float when every value is a float, int or
    bool, and otherwise only for objects that add to a float (a Fraction, say); ``ClosedStep``
    converts all of them to float in the sender thread, and an object that will not convert
    costs its step, counted as lost. Three times cheaper than a type test per value. Anything
    else (arrays, tensors, strings) takes the slow path, which converts or names the offender.
    """
    try:
        if type(sum(scalars.values())) is float:
            return scalars
    except Exception:  # e.g. arrays of different shapes: let the slow path name the argument
        pass
    return {name: _to_float(name, value) for name, value in scalars.items()}


def _install_process_hooks() -> None:
    """Close runs at interpreter exit; silence them in forked children. Installed on first use."""
    global _process_hooks_installed
    if not _process_hooks_installed:
        atexit.register(_close_all)
        os.register_at_fork(after_in_child=_forget_in_child)
        _process_hooks_installed = True


def _close_all() -> None:
    for run in list(_live_runs):
        run.close()


def _forget_in_child() -> None:
    """A forked child (a DataLoader worker) must neither send nor resend its parent's records."""
    for run in list(_live_runs):
        run._closed = True
        run._sender = None
    _live_runs.clear()
