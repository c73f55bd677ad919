"""The alert engine and detectors as pure functions."""

from __future__ import annotations

import numpy as np

from ratiowatch_server.alerts.engine import AlertEvent, StepMetrics, evaluate
from ratiowatch_server.alerts.rules import (
    DriftRule,
    NonFiniteRule,
    SpikeRule,
    ThresholdRule,
    default_rules,
)


def _events(*args: object) -> list[AlertEvent]:
    return evaluate(*args).events  # type: ignore[arg-type]


def _steps(key: str, values: list[float | None], first: int = 0) -> list[StepMetrics]:
    return [StepMetrics(first + i, {key: v}) for i, v in enumerate(values)]


def test_spike_fires_once_and_resolves() -> None:
    rule = SpikeRule(name="spike", metric="g")
    rng = np.random.default_rng(0)
    calm = list(1.0 + 0.2 * rng.random(40))
    events = _events([rule], {}, _steps("g", [*calm, 30.0, *[1.1] * 10]), {})
    assert [(e.kind, e.step) for e in events] == [("fire", 40), ("resolve", 50)]
    assert "rolling median" in events[0].message


def test_spike_needs_history_and_uses_stored_history() -> None:
    rule = SpikeRule(name="spike", metric="g", min_history=10)
    assert _events([rule], {}, _steps("g", [1.0, 1.0, 50.0]), {}) == []
    events = _events([rule], {"g": [1.0] * 20}, _steps("g", [50.0], first=20), {})
    assert [e.kind for e in events] == ["fire"]


def test_healthy_noise_does_not_fire_the_default_spike_rule() -> None:
    rng = np.random.default_rng(1)
    values = list(np.exp(rng.normal(0, 0.3, 2000)))  # grad norms wobbling +-35%, lognormal
    spike = next(r for r in default_rules() if r.name == "grad_spike")
    assert _events([spike], {}, _steps("grad/norm", values), {}) == []


def test_threshold_needs_consecutive_steps_counting_history() -> None:
    rule = ThresholdRule(name="ess", metric="ppo/ess", op="<", value=0.5, for_steps=3)
    assert _events([rule], {}, _steps("ppo/ess", [0.4, 0.4, 0.9, 0.4, 0.4]), {}) == []
    events = _events([rule], {"ppo/ess": [0.9, 0.3, 0.3]}, _steps("ppo/ess", [0.2], 3), {})
    assert [(e.kind, e.step) for e in events] == [("fire", 3)]


def test_open_alert_is_updated_not_refired() -> None:
    rule = ThresholdRule(name="blowup", metric="ppo/p99", op=">", value=2.0)
    events = _events(
        [rule], {}, _steps("ppo/p99", [3.0, 4.0, *[1.0] * 12], first=20), {"blowup": 19}
    )
    assert [(e.kind, e.step) for e in events] == [("update", 20), ("update", 21), ("resolve", 31)]


def test_a_metric_hovering_at_the_threshold_makes_one_alert() -> None:
    rule = ThresholdRule(name="blowup", metric="ppo/p99", op=">", value=2.0, clear_steps=5)
    hovering = [2.1, 1.9, 2.2, 1.8, 1.9, 2.3, 1.9] + [1.0] * 6
    events = _events([rule], {}, _steps("ppo/p99", hovering), {})
    assert [(e.kind, e.step) for e in events if e.kind != "update"] == [
        ("fire", 0),
        ("resolve", 10),
    ]


def test_nonfinite_fires_on_null_only() -> None:
    rule = NonFiniteRule(name="nan", metric="grad/norm")
    events = _events([rule], {}, _steps("grad/norm", [1.0, None, *[2.0] * 10]), {})
    assert [(e.kind, e.step) for e in events] == [("fire", 1), ("resolve", 11)]


def test_metric_missing_from_a_step_leaves_state_alone() -> None:
    rule = ThresholdRule(name="t", metric="a", op=">", value=1.0, for_steps=2)
    steps = [StepMetrics(0, {"a": 2.0}), StepMetrics(1, {"b": 0.0}), StepMetrics(2, {"a": 2.0})]
    assert [(e.kind, e.step) for e in _events([rule], {}, steps, {})] == [("fire", 2)]


def test_drift_fires_soon_after_a_sustained_rise_and_never_on_stationary_noise() -> None:
    rng = np.random.default_rng(2)
    rule = DriftRule(name="drift", metric="kl", baseline_steps=50)
    stationary = list(2e-4 * np.exp(rng.normal(0, 0.3, 5000)))  # +-35% multiplicative noise
    assert _events([rule], {}, _steps("kl", stationary), {}) == []
    rising = stationary[:300] + [2e-4 * 1.03**i for i in range(1, 200)]  # +3% per step
    fired = [e.step for e in _events([rule], {}, _steps("kl", rising), {}) if e.kind == "fire"]
    assert fired and 300 < fired[0] < 340, fired


def test_drift_state_carries_across_batches_like_one_batch() -> None:
    rng = np.random.default_rng(3)
    rule = DriftRule(name="drift", metric="kl", baseline_steps=20)
    values = list(np.exp(rng.normal(0, 0.2, 60))) + [20.0] * 5
    whole = evaluate([rule], {}, _steps("kl", values), {})
    first = evaluate([rule], {}, _steps("kl", values[:30]), {})
    second = evaluate([rule], {}, _steps("kl", values[30:], first=30), {}, first.states)
    assert [(e.kind, e.step) for e in first.events + second.events] == [
        (e.kind, e.step) for e in whole.events
    ]
    assert second.states == whole.states and whole.states["drift"]["sum"] > rule.threshold
