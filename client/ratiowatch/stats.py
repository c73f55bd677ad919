"""Per-step importance-ratio statistics, as mergeable partials.

A step arrives in pieces (micro-batches, ranks), so statistics are first reduced to sufficient
statistics that add exactly (``FamilyPartial``) and only turned into the published numbers
(``finalize``) once the step is complete. Definitions are those of DESIGN section 3.

Ratios overflow float64 for log-ratios above 709 and float32 above 88, which is exactly when a run
is failing and the numbers matter most. So nothing per token is kept as ``r = exp(x)``: the sums of
``r`` and ``r**2`` are kept relative to the largest log-ratio seen (``max_x``), and rescaled when
partials merge; sums of ``expm1(x)`` are kept too, because near ``r = 1`` they give the spread of
``r`` without the cancellation of ``E[r**2] - E[r]**2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ratiowatch.arrays import StepArrays, as_numpy, validate_inputs
from ratiowatch.errors import InvalidArgumentError
from ratiowatch.khat import merge_tails
from ratiowatch.sketch import RatioSketch
from ratiowatch.stats_finalize import QUANTILE_KEYS, QUANTILES, finalize_partial

__all__ = [
    "FAMILIES",
    "QUANTILES",
    "QUANTILE_KEYS",
    "FamilyPartial",
    "compute_partial",
    "compute_step_partials",
]

FAMILIES = ("ppo", "mismatch", "offpolicy")

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]

# Layout of the scalar vector every reduction backend produces, one row per chunk of tokens.
SCALAR_FIELDS = (
    "count",  # masked tokens with a finite log-ratio
    "nonfinite",  # masked tokens with a NaN or infinite log-ratio
    "max_x",  # -inf when empty; the shift of sum_r and sum_r2
    "min_x",  # +inf when empty
    "sum_r",  # sum of exp(x - max_x)
    "sum_r2",  # sum of exp(2 * (x - max_x))
    "sum_e",  # sum of expm1(x); inf once x > 709
    "sum_e2",  # sum of expm1(x)**2; inf once x > 354
    "sum_x",
    "sum_x2",
    "clip_low",  # tokens with r < 1 - eps_low
    "clip_high",  # tokens with r > 1 + eps_high
    "clip_active",  # tokens whose clipped branch is the active one (needs advantages)
    "adv_count",  # tokens for which advantages were given
)
_FIELD = {name: i for i, name in enumerate(SCALAR_FIELDS)}
_COUNT_FIELDS = ("count", "nonfinite", "clip_low", "clip_high", "clip_active", "adv_count")
EMPTY_SCALARS = np.zeros(len(SCALAR_FIELDS))
EMPTY_SCALARS[_FIELD["max_x"]] = -math.inf
EMPTY_SCALARS[_FIELD["min_x"]] = math.inf


def combine_scalars(table: Float64Array) -> Float64Array:
    """Merge scalar rows (one per chunk, micro-batch or rank) into one, exactly up to rounding."""
    out: Float64Array = table.sum(axis=0)
    if len(table) == 1:
        return out
    top = table[:, _FIELD["max_x"]].max()
    out[_FIELD["max_x"]] = top
    out[_FIELD["min_x"]] = table[:, _FIELD["min_x"]].min()
    if top == -math.inf:
        out[_FIELD["sum_r"]] = out[_FIELD["sum_r2"]] = 0.0
    else:
        scale = np.exp(table[:, _FIELD["max_x"]] - top)  # empty rows: exp(-inf) = 0
        out[_FIELD["sum_r"]] = table[:, _FIELD["sum_r"]] @ scale
        out[_FIELD["sum_r2"]] = table[:, _FIELD["sum_r2"]] @ (scale * scale)
    return out


@dataclass(eq=False)  # numpy fields make field-wise == ambiguous
class FamilyPartial:
    """Mergeable sufficient statistics of one family over some tokens.

    Field meanings are those of ``SCALAR_FIELDS``; ``seq_sum``/``seq_count`` hold, per sequence
    (row), the sum of its valid log-ratios and their number (empty for 1-D input, which has no
    sequence structure). ``with_advantages`` says whether ``clip_active`` is meaningful.
    ``tail`` holds the ``khat.TAIL_SIZE`` largest log-ratios, unordered, for k-hat.
    """

    count: int = 0
    nonfinite: int = 0
    max_x: float = -math.inf
    min_x: float = math.inf
    sum_r: float = 0.0
    sum_r2: float = 0.0
    sum_e: float = 0.0
    sum_e2: float = 0.0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    clip_low: int = 0
    clip_high: int = 0
    clip_active: int = 0
    adv_count: int = 0
    with_advantages: bool = False
    sketch: RatioSketch = field(default_factory=RatioSketch)
    seq_sum: Float64Array = field(default_factory=lambda: np.zeros(0))
    seq_count: Int64Array = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tail: Float64Array = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def empty(cls) -> FamilyPartial:
        return cls()

    @classmethod
    def from_scalars(
        cls,
        scalars: Float64Array,
        *,
        sketch: RatioSketch,
        seq_sum: Float64Array,
        seq_count: Int64Array,
        with_advantages: bool,
        tail: Float64Array | None = None,
    ) -> FamilyPartial:
        """Partial from a vector in ``SCALAR_FIELDS`` layout plus the non-scalar parts."""
        values: dict[str, Any] = dict(zip(SCALAR_FIELDS, scalars.tolist(), strict=True))
        for name in _COUNT_FIELDS:
            values[name] = round(values[name])
        return cls(
            **values,
            with_advantages=with_advantages,
            sketch=sketch,
            seq_sum=np.asarray(seq_sum, dtype=np.float64),
            seq_count=np.asarray(seq_count, dtype=np.int64),
            tail=np.zeros(0) if tail is None else np.asarray(tail, dtype=np.float64),
        )

    def scalars(self) -> Float64Array:
        """The scalar fields as a float64 vector in ``SCALAR_FIELDS`` layout."""
        return np.array([float(getattr(self, name)) for name in SCALAR_FIELDS])

    def collective_arrays(self, shift: float) -> tuple[Float64Array, Float64Array]:
        """(sums, extremes) for a collective reduction across ranks.

        Protocol: all-reduce ``[max_x, -min_x]`` (``extremes`` with any shift) with MAX; call again
        with ``shift`` = the reduced max_x and all-reduce ``sums`` and ``sketch.bins`` with SUM;
        all-gather ``seq_sum``/``seq_count``/``tail``; rebuild with ``from_collective``.
        """
        vector = self.scalars()
        scale = 0.0 if self.count == 0 else math.exp(self.max_x - shift)
        vector[_FIELD["sum_r"]] *= scale
        vector[_FIELD["sum_r2"]] *= scale * scale
        vector[_FIELD["max_x"]] = vector[_FIELD["min_x"]] = 0.0
        return vector, np.array([self.max_x, -self.min_x])

    @classmethod
    def from_collective(
        cls,
        sums: Float64Array,
        extremes: Float64Array,
        *,
        bins: Int64Array,
        seq_sum: Float64Array,
        seq_count: Int64Array,
        with_advantages: bool,
        tail: Float64Array | None = None,
    ) -> FamilyPartial:
        """Inverse of ``collective_arrays`` after the reductions (``tail``: all ranks' tails)."""
        vector = np.array(sums, dtype=np.float64)
        vector[_FIELD["max_x"]] = extremes[0]
        vector[_FIELD["min_x"]] = -extremes[1]
        return cls.from_scalars(
            vector,
            sketch=RatioSketch.from_bins(bins),
            seq_sum=seq_sum,
            seq_count=seq_count,
            with_advantages=with_advantages,
            tail=None if tail is None else merge_tails(tail),
        )

    def merge(self, other: FamilyPartial) -> FamilyPartial:
        """The partial of the concatenated tokens (and sequences); neither input is modified."""
        sketch = RatioSketch()
        sketch.merge(self.sketch)
        sketch.merge(other.sketch)
        return FamilyPartial.from_scalars(
            combine_scalars(np.stack([self.scalars(), other.scalars()])),
            sketch=sketch,
            seq_sum=np.concatenate([self.seq_sum, other.seq_sum]),
            seq_count=np.concatenate([self.seq_count, other.seq_count]),
            with_advantages=self.with_advantages or other.with_advantages,
            tail=merge_tails(self.tail, other.tail),
        )

    def finalize(self) -> dict[str, float | None]:
        """Published statistics (keys without the family prefix); None where undefined."""
        return finalize_partial(self)


def _clip_thresholds(clip: tuple[float, float]) -> tuple[float, float]:
    """Log-space clip thresholds: r < 1 - eps_low  <=>  x < log1p(-eps_low)."""
    try:
        eps_low, eps_high = (float(eps) for eps in clip)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"clip is {clip!r}; expected two numbers (eps_low, eps_high)"
        ) from None
    if not (math.isfinite(eps_low) and math.isfinite(eps_high)) or min(eps_low, eps_high) < 0:
        raise InvalidArgumentError(
            f"clip is {clip!r}; expected two finite non-negative numbers (eps_low, eps_high)"
        )
    low = math.log1p(-eps_low) if eps_low < 1 else -math.inf
    return low, math.log1p(eps_high)


def compute_partial(
    x: object,
    mask: object = None,
    *,
    advantages: object = None,
    clip: tuple[float, float] = (0.2, 0.2),
) -> FamilyPartial:
    """Partial of the log-ratios ``x`` ([batch, seq], or [n] for no sequence structure)."""
    arrays = validate_inputs(x=x, mask=mask, advantages=advantages)
    return _reduce(arrays, "x", None, _clip_thresholds(clip))


def compute_step_partials(
    *,
    logp: object = None,
    logp_old: object = None,
    logp_behavior: object = None,
    mask: object = None,
    advantages: object = None,
    clip: tuple[float, float] = (0.2, 0.2),
) -> dict[str, FamilyPartial]:
    """Partials of every family the given log-probs define (DESIGN section 2).

    Validates everything before computing anything; ``{}`` when no family can be formed.
    """
    arrays = validate_inputs(
        logp=logp,
        logp_old=logp_old,
        logp_behavior=logp_behavior,
        mask=mask,
        advantages=advantages,
    )
    thresholds = _clip_thresholds(clip)
    families: dict[str, tuple[str, str]] = {}
    if logp is not None and logp_old is not None:
        families["ppo"] = ("logp", "logp_old")
    if logp_old is not None and logp_behavior is not None:
        families["mismatch"] = ("logp_old", "logp_behavior")
    if logp is not None and logp_old is None and logp_behavior is not None:
        families["offpolicy"] = ("logp", "logp_behavior")
    return {
        family: _reduce(arrays, new, old, thresholds) for family, (new, old) in families.items()
    }


def _reduce(
    arrays: StepArrays, new: str, old: str | None, thresholds: tuple[float, float]
) -> FamilyPartial:
    """Partial of x = arrays[new] - arrays[old], on whichever backend holds the arrays."""
    operands: list[Any] = [
        arrays.get(new),
        None if old is None else arrays.get(old),
        arrays.get("mask"),
        arrays.get("advantages"),
    ]
    if arrays.device in (None, "cpu"):
        # CPU tensors are viewed as numpy arrays: torch's eager CPU ops are slower here. The
        # fused numba kernel ([fast] extra) is used when installed, numpy otherwise.
        from ratiowatch.stats_numpy import reduce_cpu

        first, second, mask, advantages = (None if a is None else as_numpy(a) for a in operands)
        # the k-hat tail comes from the same kernel
        table, bins, seq_sum, seq_count, tail = reduce_cpu(
            first, second, mask, advantages, *thresholds
        )
    else:
        from ratiowatch.stats_torch import reduce_device

        first, second, mask, advantages = operands
        table, bins, seq_sum, seq_count, tail = reduce_device(
            first, second, mask, advantages, *thresholds
        )
    sketch = RatioSketch()
    sketch.add_bins(bins)
    return FamilyPartial.from_scalars(
        combine_scalars(table),
        sketch=sketch,
        seq_sum=seq_sum,
        seq_count=seq_count,
        with_advantages=arrays.get("advantages") is not None,
        tail=tail,
    )
