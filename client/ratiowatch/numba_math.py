"""Branch-free float64 helpers for numba kernels, written so that LLVM vectorises the loops
that call them: numba can vectorise neither ``math.expm1`` (a libm call per element) nor a float
max/min reduction, and it has no scalar bit cast. They are inlined into the caller's IR and so
compiled with the caller's fastmath flags.

numba's disk cache keys each kernel on its own file only: after an edit here, the kernels cached
from the other modules keep the old code until deleted (``__pycache__/*.nbi``, ``*.nbc``; the test
suite does so whenever a source of the package changed).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

__all__ = [
    "EXPM1_MAX_X",
    "ZERO_KEY",
    "bits_as_float",
    "expm1",
    "float_as_bits",
    "key_value",
    "order_key",
]

# expm1 by Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, and p(r) = r + r^2 q(r), with q the
# degree-9 Chebyshev interpolant of (expm1(r) - r) / r^2 on [-ln2/2, ln2/2] (mpmath.chebyfit, 10
# terms; error 1.05e-16, 3.6e-17 relative to expm1(r)): two terms fewer than the Taylor polynomial
# of equal accuracy. Then expm1(x) = 2^k p + (2^k - 1): within about 1 ulp for every x
# (tests/client/test_stats_numba.py), and no cancellation near 0, where k = 0.
EXPM1_MAX_X = 709.0  # the largest x for which 2^k is a float64 (k <= 1023)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split: k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9 = (
    0.5000000000000001,
    0.16666666666666669,
    0.041666666666624164,
    0.008333333333330065,
    0.0013888888917196719,
    0.00019841269863040545,
    2.4801521322368692e-05,
    2.7557268480310024e-06,
    2.7620075879983367e-07,
    2.5100375832561234e-08,
)
_SIGN_OFF = 0x7FFFFFFFFFFFFFFF
ZERO_KEY = 0  # order_key(0.0)


def _bitcast(context: Any, builder: Any, signature: Any, args: Any) -> Any:
    """LLVM bit cast of the one argument to the return type (numba has no scalar bit cast)."""
    return builder.bitcast(args[0], context.get_value_type(signature.return_type))


def _float_from_bits(typingctx: Any, bits: Any) -> Any:
    return types.float64(types.int64), _bitcast


def _bits_from_float(typingctx: Any, value: Any) -> Any:
    return types.int64(types.float64), _bitcast


# Typed Any: numba's stubs describe intrinsics by their typing signature, not their use in a kernel.
bits_as_float: Any = intrinsic(_float_from_bits)
float_as_bits: Any = intrinsic(_bits_from_float)


@numba.njit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def order_key(value: float) -> int:
    """An int64 ordered as the float is (for non-NaN floats); its own inverse on the bits."""
    bits = float_as_bits(value)
    return bits ^ ((bits >> 63) & _SIGN_OFF)  # type: ignore[no-any-return]


@numba.njit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def key_value(key: int) -> float:
    return bits_as_float(key ^ ((key >> 63) & _SIGN_OFF))  # type: ignore[no-any-return]


@numba.njit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def expm1(x: float) -> float:
    """expm1 of a finite x <= ``EXPM1_MAX_X``, in branch-free arithmetic so that the token loop
    vectorises; larger x give expm1(EXPM1_MAX_X), and the caller redoes them with ``math.expm1``.

    Handling x up to expm1's own limit (709.78, where 2^k = 2^1024 is not a float64) took four
    more vector operations per token, for ratios above 1e307 that no healthy run produces.
    """
    # Below -60 the result rounds to -1.
    clamped = min(max(x, -60.0), EXPM1_MAX_X)
    k = np.rint(clamped * _LOG2E)
    r = (clamped - k * _LN2_HI) - k * _LN2_LO
    q = _Q9 * r + _Q8
    q = q * r + _Q7
    q = q * r + _Q6
    q = q * r + _Q5
    q = q * r + _Q4
    q = q * r + _Q3
    q = q * r + _Q2
    q = q * r + _Q1
    q = q * r + _Q0
    p = r + r * r * q
    scale = bits_as_float((int(k) + 1023) << 52)
    return scale * p + (scale - 1.0)  # type: ignore[no-any-return]
