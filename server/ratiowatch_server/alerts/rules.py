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


@dataclass(frozen=True)
class ThresholdRule:
    """Fires when ``metric op value`` holds for ``for_steps`` consecutive logged steps."""

    name: str
    metric: str
    op: Literal[">", "<"]
    value: float
    for_steps: int = 1
    severity: Severity = "warning"
    description: str = ""
    clear_steps: int = CLEAR_STEPS

    @property
    def history_needed(self) -> int:
        return self.for_steps - 1


@dataclass(frozen=True)
class SpikeRule:
    """Fires when a value jumps far above its rolling median (robust z-score and plain ratio)."""

    name: str
    metric: str
    window: int = 50
    min_history: int = 10
    z: float = 10.0
    ratio: float = 5.0
    severity: Severity = "critical"
    description: str = ""
    clear_steps: int = CLEAR_STEPS

    @property
    def history_needed(self) -> int:
        return self.window


@dataclass(frozen=True)
class NonFiniteRule:
    """Fires when a metric arrives as NaN/Inf (stored as null): the training data itself broke."""

    name: str
    metric: str
    severity: Severity = "critical"
    description: str = ""
    clear_steps: int = CLEAR_STEPS

    @property
    def history_needed(self) -> int:
        return 0


Rule = ThresholdRule | SpikeRule | NonFiniteRule


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
