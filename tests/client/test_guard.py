"""The containment boundary: swallow, log once, count; re-raise in strict mode."""

from __future__ import annotations

import logging

import pytest

from ratiowatch import guard as guard_module
from ratiowatch.guard import Guard


def test_contained_errors_are_logged_once_per_place_and_type_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard_module.strict(False)
    guard = Guard()
    with caplog.at_level(logging.ERROR, logger="ratiowatch"):
        for _ in range(3):
            with guard.contained("log"):
                raise ValueError("bug")
        with guard.contained("log"):
            raise KeyError("other bug")
        with guard.contained("sender"):
            raise ValueError("bug")
    assert guard.errors == {"log": 4, "sender": 1}
    assert len(caplog.records) == 3
    assert guard.summary() == "ratiowatch: 4 internal errors in log, 1 internal errors in sender"


def test_strict_mode_reraises_so_tests_see_swallowed_bugs() -> None:
    guard = Guard()  # the autouse fixture has switched strict mode on
    with pytest.raises(ZeroDivisionError), guard.contained("log"):
        _ = 1 / 0
    assert guard.errors["log"] == 1


def test_keyboard_interrupt_is_never_swallowed() -> None:
    guard_module.strict(False)
    with pytest.raises(KeyboardInterrupt), Guard().contained("log"):
        raise KeyboardInterrupt


def test_losses_are_counted_by_reason_and_summarised() -> None:
    guard = Guard()
    assert guard.summary() is None
    guard.count_lost("spool_cap", 5)
    guard.count_lost("spool_cap", 2)
    guard.count_lost("rejected_by_server")
    assert guard.lost == {"spool_cap": 7, "rejected_by_server": 1}
    assert guard.summary() == "ratiowatch: 7 lost (spool_cap), 1 lost (rejected_by_server)"
