"""Mergeable relative-error quantile sketch of importance ratios.

Ratios span dozens of orders of magnitude in a failing run, so a rank-error sketch (t-digest, KLL)
would report a p99.9 of 1e12 as "somewhere between 1e6 and 1e18". A DDSketch-style log-bucket sketch
(Masson et al., VLDB 2019) bounds the *relative* error of every quantile instead, and its counts add
exactly across micro-batches, ranks and steps, so the server can merge any window.

Bucket ``k`` holds the ratios ``r`` with ``gamma**(k-1) < r <= gamma**k``, found from the log-ratio
``x`` as ``ceil(x / ln(gamma))`` (up to rounding, see ``bin_indices``) without ever forming ``r``
(which overflows for ``x > 709``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ratiowatch.errors import InvalidArgumentError

__all__ = [
    "INV_LN_GAMMA",
    "KEY_OFFSET",
    "LN_GAMMA",
    "MAX_KEY",
    "MIN_KEY",
    "NUM_BINS",
    "RELATIVE_ACCURACY",
    "RatioSketch",
    "bin_index",
    "bin_indices",
]

RELATIVE_ACCURACY = 0.01
GAMMA = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
LN_GAMMA = math.log(GAMMA)
INV_LN_GAMMA = 1.0 / LN_GAMMA
# Ratios below 1e-38 are reported as 0 and above 1e38 as inf: past that range a monitor only needs
# to know that the tail exists, and the bounded range keeps the dense count array at ~9,000 bins.
MIN_KEY = math.ceil(math.log(1e-38) / LN_GAMMA)
MAX_KEY = math.ceil(math.log(1e38) / LN_GAMMA)
# Dense layout: bin 0 counts "zero", bins 1..MAX_KEY-MIN_KEY+1 the keys, the last bin "overflow".
KEY_OFFSET = MIN_KEY - 1
NUM_BINS = MAX_KEY - MIN_KEY + 3
# (1 - a) * gamma**k is the value whose relative distance to both bucket ends is exactly a.
_REPRESENTATIVE_FACTOR = 1.0 - RELATIVE_ACCURACY
_MAX_COUNT = 2**53  # counts travel through JSON and float64 all-reduces: keep them exact there

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]


def bin_index(x: float) -> int:
    """Dense bin of one finite log-ratio, computed exactly as ``bin_indices`` does."""
    return int(min(max(math.ceil(x * INV_LN_GAMMA), KEY_OFFSET), MAX_KEY + 1) - KEY_OFFSET)


def bin_indices(
    x: Float64Array,
    *,
    first: int = 0,
    clip: bool = True,
    scratch: Float64Array | None = None,
    out: npt.NDArray[np.intp] | None = None,
) -> npt.NDArray[np.intp]:
    """Dense bin of each finite log-ratio, minus ``first`` (the lowest bin the caller expects).

    Every backend must do exactly this float64 arithmetic, in this order, so that the same tokens
    always land in the same bins. (Multiplying by 1/ln(gamma) instead of dividing only moves
    values within an ulp of a bucket boundary.) ``clip=False`` skips routing values to the zero
    and overflow bins, for callers that know every value lies inside the key range.
    ``scratch``/``out`` are optional reusable buffers.
    """
    t = np.multiply(x, INV_LN_GAMMA, out=scratch)
    np.ceil(t, out=t)
    if clip:
        np.clip(t, KEY_OFFSET, MAX_KEY + 1, out=t)
    t -= KEY_OFFSET + first
    if out is None:
        return t.astype(np.intp)
    np.copyto(out, t, casting="unsafe")
    return out


class RatioSketch:
    """DDSketch-style mergeable quantile sketch of r = exp(x), keyed in log space.

    Every quantile it answers is within ``RELATIVE_ACCURACY`` (up to float rounding) of the exact
    order statistic of the same rank, for ratios in [1e-38, 1e38]; below that it answers 0.0, above
    it inf.
    """

    __slots__ = ("_bins",)

    def __init__(self) -> None:
        self._bins: Int64Array = np.zeros(NUM_BINS, dtype=np.int64)

    @classmethod
    def from_bins(cls, bins: npt.ArrayLike) -> RatioSketch:
        """Sketch over a dense count vector in the layout of ``bins`` (e.g. after an all-reduce)."""
        dense = np.asarray(bins)
        if dense.shape != (NUM_BINS,):
            raise InvalidArgumentError(
                f"sketch bins have shape {dense.shape}; expected ({NUM_BINS},)"
            )
        sketch = cls()
        sketch._bins[:] = dense
        if (sketch._bins < 0).any():
            raise InvalidArgumentError("sketch bins contain a negative count")
        return sketch

    @property
    def bins(self) -> Int64Array:
        """Dense counts, zero bin first and overflow bin last; a copy, safe to reduce in place."""
        return self._bins.copy()

    @property
    def count(self) -> int:
        return int(self._bins.sum())

    def add_bins(self, bins: Int64Array) -> None:
        """Add dense counts computed elsewhere (by a kernel over ``bin_indices``)."""
        self._bins += bins

    def add_keys_counts(self, keys: npt.ArrayLike, counts: npt.ArrayLike) -> None:
        """Add ``counts[i]`` to bucket ``keys[i]``; out-of-range keys go to zero/overflow."""
        key_array = np.asarray(keys, dtype=np.int64)
        count_array = np.asarray(counts, dtype=np.int64)
        if key_array.shape != count_array.shape or key_array.ndim != 1:
            raise InvalidArgumentError(
                f"keys have shape {key_array.shape}, counts have shape {count_array.shape}; "
                "expected two 1-D arrays of the same length"
            )
        if (count_array < 0).any():
            raise InvalidArgumentError("counts contain a negative value")
        index = np.clip(key_array, KEY_OFFSET, MAX_KEY + 1) - KEY_OFFSET
        np.add.at(self._bins, index, count_array)

    def add_logratios(self, x: npt.ArrayLike) -> None:
        """Add the ratios exp(x) of finite log-ratios."""
        values = np.asarray(x, dtype=np.float64).ravel()
        if not np.isfinite(values).all():
            raise InvalidArgumentError("log-ratios must be finite; drop NaN and Inf before adding")
        self._bins += np.bincount(bin_indices(values), minlength=NUM_BINS)

    def merge(self, other: RatioSketch) -> None:
        """Add ``other``'s counts to this sketch, exactly."""
        self._bins += other._bins

    def quantile(self, q: float) -> float | None:
        """Ratio at rank ``max(1, ceil(q * count))``; None when empty."""
        values = self.quantiles([q])
        return None if values is None else values[0]

    def quantiles(self, qs: Sequence[float]) -> list[float] | None:
        """Several quantiles from one cumulative pass; None when empty."""
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise InvalidArgumentError(f"quantile q is {q!r}; expected a number in [0, 1]")
        # Only occupied bins are summed: a cumsum over all bins would dominate small steps.
        occupied = (self._bins != 0).nonzero()[0]
        if occupied.size == 0:
            return None
        cumulative = np.cumsum(self._bins[occupied])
        total = int(cumulative[-1])
        ranks = [max(1, math.ceil(q * total)) for q in qs]
        found = occupied[np.searchsorted(cumulative, ranks, side="left")]
        return [_bin_value(int(j)) for j in found]

    def buckets(self) -> list[tuple[float, int]]:
        """(representative ratio, count) of each occupied bucket, ascending, for histograms.

        The zero and overflow buckets appear as 0.0 and inf, as in ``quantile``.
        """
        occupied = (self._bins != 0).nonzero()[0]
        return [(_bin_value(int(j)), int(self._bins[j])) for j in occupied]

    def to_wire(self) -> dict[str, object]:
        """JSON-able sparse form; keys ascending, zero counts omitted."""
        inner = self._bins[1:-1]
        nonzero = np.flatnonzero(inner)
        return {
            "a": RELATIVE_ACCURACY,
            "zero": int(self._bins[0]),
            "overflow": int(self._bins[-1]),
            "keys": (nonzero + MIN_KEY).tolist(),
            "counts": inner[nonzero].tolist(),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, object]) -> RatioSketch:
        """Parse ``to_wire`` output; bad input raises InvalidArgumentError naming the field."""
        if not isinstance(data, Mapping):
            raise InvalidArgumentError(f"sketch must be an object; got {type(data).__name__}")
        unknown = sorted(set(data) - {"a", "zero", "overflow", "keys", "counts"})
        if unknown:
            raise InvalidArgumentError(
                f"sketch has unknown field(s) {', '.join(map(str, unknown))}"
            )
        accuracy = _field(data, "a")
        if (
            isinstance(accuracy, bool)
            or not isinstance(accuracy, (int, float))
            or not math.isclose(accuracy, RELATIVE_ACCURACY, rel_tol=1e-9)
        ):
            raise InvalidArgumentError(
                f"sketch field 'a' is {accuracy!r}; only {RELATIVE_ACCURACY} is supported"
            )
        keys = _int_list(data, "keys", MIN_KEY, MAX_KEY)
        counts = _int_list(data, "counts", 1, _MAX_COUNT)
        if len(keys) != len(counts):
            raise InvalidArgumentError(
                f"sketch field 'counts' has {len(counts)} entries, 'keys' has {len(keys)}"
            )
        if any(b <= a for a, b in itertools.pairwise(keys)):
            raise InvalidArgumentError("sketch field 'keys' must be strictly increasing")
        zero, overflow = _int_field(data, "zero"), _int_field(data, "overflow")
        if zero + overflow + sum(counts) > _MAX_COUNT:
            raise InvalidArgumentError(f"sketch counts add up to more than {_MAX_COUNT}")
        sketch = cls()
        sketch._bins[0] = zero
        sketch._bins[-1] = overflow
        sketch._bins[np.asarray(keys, dtype=np.int64) - KEY_OFFSET] = counts
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RatioSketch):
            return NotImplemented
        return bool(np.array_equal(self._bins, other._bins))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RatioSketch(count={self.count})"


def _bin_value(j: int) -> float:
    if j == 0:
        return 0.0
    if j == NUM_BINS - 1:
        return math.inf
    return _REPRESENTATIVE_FACTOR * math.exp((j + KEY_OFFSET) * LN_GAMMA)


def _field(data: Mapping[str, object], name: str) -> object:
    if name not in data:
        raise InvalidArgumentError(f"sketch field '{name}' is missing")
    return data[name]


def _int_field(data: Mapping[str, object], name: str) -> int:
    value = _field(data, name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        raise InvalidArgumentError(
            f"sketch field '{name}' is {value!r}; expected an integer in [0, {_MAX_COUNT}]"
        )
    return value


def _int_list(data: Mapping[str, object], name: str, low: int, high: int) -> list[int]:
    value: Any = _field(data, name)
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in value
    ):
        raise InvalidArgumentError(
            f"sketch field '{name}' must be a list of integers in [{low}, {high}]"
        )
    return value
