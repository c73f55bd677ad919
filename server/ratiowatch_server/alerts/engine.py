"""Runs the rules over a batch of new steps, given each metric's recent history.

The engine is pure: the store hands it the history (from the database, so detector state survives
restarts and is the same whichever worker takes the batch) and the open alerts with the last step
their condition held, and applies the events it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ratiowatch_server.alerts.detectors import robust_spike, threshold_holds
from ratiowatch_server.alerts.rules import NonFiniteRule, Rule, ThresholdRule

EventKind = Literal["fire", "update", "resolve"]


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


def evaluate(
    rules: Iterable[Rule],
    history: Mapping[str, Sequence[float | None]],
    steps: Sequence[StepMetrics],
    open_alerts: Mapping[str, int],
) -> list[AlertEvent]:
    """Events for ``steps`` (in step order).

    ``history`` holds each metric's earlier values; ``open_alerts`` maps the rule of each open
    alert to the last step its condition held.
    """
    events: list[AlertEvent] = []
    for rule in rules:
        past = list(history.get(rule.metric, ()))
        events += _run_rule(rule, past, steps, open_alerts.get(rule.name))
    events.sort(key=lambda event: event.step)
    return events


def _run_rule(
    rule: Rule, past: list[float | None], steps: Sequence[StepMetrics], last_held: int | None
) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    streak = _trailing_streak(rule, past) if isinstance(rule, ThresholdRule) else 0
    for record in steps:
        if rule.metric not in record.metrics:
            continue
        value = record.metrics[rule.metric]
        condition, detail = _condition(rule, past, value)
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


def _condition(rule: Rule, past: list[float | None], value: float | None) -> tuple[bool, str]:
    if isinstance(rule, NonFiniteRule):
        return value is None, f"{rule.metric} is NaN or Inf"
    if value is None:
        return False, ""
    if isinstance(rule, ThresholdRule):
        holds = threshold_holds(value, rule.op, rule.value)
        return holds, f"{rule.metric} = {value:.4g} {rule.op} {rule.value:g}"
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
