"""Rule definitions and the default preset for RL training.

Defaults are chosen to stay quiet on a healthy PPO/GRPO run (ratios near 1, ESS above 0.9, KL
well under 0.05) and to fire when a run starts to go wrong; tests check both on real loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ratiowatch.stats import FAMILIES

Severity = Literal["warning", "critical"]
# An open alert resolves only after its condition has been clear this many logged steps, so a
# metric hovering at the threshold makes one alert, not one per crossing.
CLEAR_STEPS = 10


@dataclass(frozen=True, kw_only=True)
class _RuleBase:
    """What every rule has: a name (one open alert per run and name), the metric it watches,
    how loud it is, and how many clear steps resolve its alert."""

    name: str
    metric: str
    severity: Severity = "warning"
    description: str = ""
    clear_steps: int = CLEAR_STEPS

    @property
    def history_needed(self) -> int:
        """Earlier values of ``metric`` the rule reads from the store before a batch."""
        return 0


@dataclass(frozen=True, kw_only=True)
class ThresholdRule(_RuleBase):
    """Fires when ``metric op value`` holds for ``for_steps`` consecutive logged steps."""

    op: Literal[">", "<"]
    value: float
    for_steps: int = 1

    @property
    def history_needed(self) -> int:
        return self.for_steps - 1


@dataclass(frozen=True, kw_only=True)
class SpikeRule(_RuleBase):
    """Fires when a value jumps far above its rolling median (robust z-score and plain ratio)."""

    window: int = 50
    min_history: int = 10
    z: float = 10.0
    ratio: float = 5.0
    severity: Severity = "critical"

    @property
    def history_needed(self) -> int:
        return self.window


@dataclass(frozen=True, kw_only=True)
class NonFiniteRule(_RuleBase):
    """Fires when a metric arrives as NaN/Inf (stored as null): the training data itself broke."""

    severity: Severity = "critical"


@dataclass(frozen=True, kw_only=True)
class DriftRule(_RuleBase):
    """Fires when a metric drifts up from its own early-run baseline (one-sided CUSUM).

    The baseline is the median and MAD of the run's first ``baseline_steps`` values of the metric,
    in log space (KL estimates are positive and vary multiplicatively). Each later value adds its
    robust z-score minus ``slack`` to a cumulative sum floored at 0; the alert fires when the sum
    passes ``threshold``. With slack 1 and threshold 12 a stationary series almost never fires,
    while a sustained 3-sigma rise is caught in about six steps and a jump far out of the
    baseline in one or two. Suited to metrics that are stationary on a healthy run, such as the
    trainer-vs-engine mismatch.
    """

    baseline_steps: int = 50
    slack: float = 1.0
    threshold: float = 12.0


Rule = ThresholdRule | SpikeRule | NonFiniteRule | DriftRule


def default_rules() -> list[Rule]:
    """The RL preset: gradient spikes, ratio blow-ups, ESS collapse, KL drift and NaN/Inf."""
    rules: list[Rule] = [
        SpikeRule(
            name="grad_spike",
            metric="grad/norm",
            description="gradient norm far above its rolling median",
        ),
        NonFiniteRule(
            name="grad_nonfinite",
            metric="grad/norm",
            description="gradient norm is NaN or Inf",
        ),
    ]
    for family in FAMILIES:
        rules += [
            ThresholdRule(
                name=f"ratio_blowup:{family}",
                metric=f"{family}/p99",
                op=">",
                value=2.0,
                for_steps=2,
                severity="critical",
                description=f"99th percentile of the {family} ratio above 2",
            ),
            ThresholdRule(
                name=f"ess_collapse:{family}",
                metric=f"{family}/ess",
                op="<",
                value=0.5,
                for_steps=3,
                description=f"effective sample size of the {family} ratio below 50%",
            ),
            ThresholdRule(
                name=f"kl_drift:{family}",
                metric=f"{family}/kl_k3",
                op=">",
                value=0.1,
                for_steps=3,
                description=f"k3 KL estimate of the {family} ratio above 0.1",
            ),
            *_drift_rules(family),
            ThresholdRule(
                name=f"nonfinite:{family}",
                metric=f"{family}/nonfinite",
                op=">",
                value=0.0,
                severity="critical",
                description=f"NaN or Inf log-ratios in the {family} family",
            ),
        ]
    return rules


def _drift_rules(family: str) -> list[Rule]:
    """Mismatch and off-policy ratios should not move on a healthy run; the PPO ratio's KL follows
    the learning rate by design, so it gets only the threshold rule."""
    if family == "ppo":
        return []
    return [
        DriftRule(
            name=f"kl_drift_cusum:{family}",
            metric=f"{family}/kl_k3",
            description=f"k3 KL of the {family} ratio drifting up from its baseline",
        )
    ]
