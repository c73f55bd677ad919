"""Runs the rules over a batch of new steps, given each metric's recent history.

The engine is pure: the store hands it the history (from the database, so detector state survives
restarts and is the same whichever worker takes the batch), the open alerts with the last step
their condition held, and the saved state of stateful detectors; it returns the events to apply
and the new detector states to save, in the same transaction as the steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ratiowatch_server.alerts.detectors import cusum_step, robust_spike, threshold_holds
from ratiowatch_server.alerts.rules import DriftRule, NonFiniteRule, Rule, ThresholdRule

EventKind = Literal["fire", "update", "resolve"]
DetectorState = dict[str, Any]


@dataclass(frozen=True)
class StepMetrics:
    step: int
    metrics: Mapping[str, float | None]


@dataclass(frozen=True)
class AlertEvent:
    kind: EventKind
    rule: Rule
    step: int
    value: float | None
    message: str


@dataclass
class Evaluation:
    events: list[AlertEvent] = field(default_factory=list)
    states: dict[str, DetectorState] = field(default_factory=dict)


def evaluate(
    rules: Iterable[Rule],
    history: Mapping[str, Sequence[float | None]],
    steps: Sequence[StepMetrics],
    open_alerts: Mapping[str, int],
    states: Mapping[str, DetectorState] | None = None,
) -> Evaluation:
    """Events for ``steps`` (in step order), and the updated detector states.

    ``history`` holds each metric's earlier values; ``open_alerts`` maps the rule of each open
    alert to the last step its condition held; ``states`` the saved state of stateful rules.
    """
    result = Evaluation()
    for rule in rules:
        past = list(history.get(rule.metric, ()))
        state = dict((states or {}).get(rule.name, {}))
        result.events += _run_rule(rule, past, steps, open_alerts.get(rule.name), state)
        if isinstance(rule, DriftRule):
            result.states[rule.name] = state
    result.events.sort(key=lambda event: event.step)
    return result


def _run_rule(
    rule: Rule,
    past: list[float | None],
    steps: Sequence[StepMetrics],
    last_held: int | None,
    state: DetectorState,
) -> list[AlertEvent]:
    """The rule's events over ``steps``; ``state`` is updated in place."""
    events: list[AlertEvent] = []
    streak = _trailing_streak(rule, past) if isinstance(rule, ThresholdRule) else 0
    for record in steps:
        if rule.metric not in record.metrics:
            continue
        value = record.metrics[rule.metric]
        condition, detail = _condition(rule, past, value, state)
        past.append(value)
        streak = streak + 1 if condition else 0
        required = rule.for_steps if isinstance(rule, ThresholdRule) else 1
        if condition and streak >= required:
            kind: EventKind = "fire" if last_held is None else "update"
            events.append(AlertEvent(kind, rule, record.step, value, _message(rule, detail)))
            last_held = record.step
        elif last_held is not None and record.step - last_held >= rule.clear_steps:
            events.append(AlertEvent("resolve", rule, record.step, value, ""))
            last_held = None
    return events


def _condition(
    rule: Rule, past: list[float | None], value: float | None, state: DetectorState
) -> tuple[bool, str]:
    if isinstance(rule, NonFiniteRule):
        return value is None, f"{rule.metric} is NaN or Inf"
    if value is None:
        return False, ""
    if isinstance(rule, ThresholdRule):
        holds = threshold_holds(value, rule.op, rule.value)
        return holds, f"{rule.metric} = {value:.4g} {rule.op} {rule.value:g}"
    if isinstance(rule, DriftRule):
        new_state, total = cusum_step(
            state, value, rule.baseline_steps, rule.slack, cap=2 * rule.threshold
        )
        state.clear()
        state.update(new_state)
        drifting = total is not None and total > rule.threshold
        return drifting, f"{rule.metric} = {value:.4g}, CUSUM {total or 0:.1f} > {rule.threshold:g}"
    window = np.array([v for v in past[-rule.window :] if v is not None], dtype=np.float64)
    if window.size < rule.min_history:
        return False, ""
    z, ratio = robust_spike(window, value)
    spiking = z > rule.z and ratio > rule.ratio
    return spiking, (
        f"{rule.metric} = {value:.4g}, {ratio:.1f}x its rolling median (robust z {z:.1f})"
    )


def _trailing_streak(rule: ThresholdRule, past: list[float | None]) -> int:
    streak = 0
    for value in reversed(past):
        if value is None or not threshold_holds(value, rule.op, rule.value):
            break
        streak += 1
    return streak


def _message(rule: Rule, detail: str) -> str:
    prefix = rule.description or rule.name
    return f"{prefix}: {detail}"
