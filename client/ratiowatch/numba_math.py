"""Branch-free float64 helpers for numba kernels, written so that LLVM vectorises the loops
that call them: numba can vectorise neither ``math.expm1`` (a libm call per element) nor a float
max/min reduction, and it has no scalar bit cast. They are inlined into the caller's IR and so
compiled with the caller's fastmath flags.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

__all__ = ["ZERO_KEY", "bits_as_float", "expm1", "float_as_bits", "key_value", "order_key"]

# expm1 by Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, and the degree-13 Taylor polynomial
# of expm1(r) (truncation < 2e-17 relative), then expm1(x) = 2^k expm1(r) + (2^k - 1): exact
# rounding to within about 1 ulp for every x (tests/client/test_stats_numba.py), and no cancellation
# near 0, where k = 0.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split: k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_INV_FACTORIAL = tuple(1.0 / math.factorial(i) for i in range(14))
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _INV_FACTORIAL[2:]
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
    """expm1 of a finite x, in branch-free arithmetic so that the token loop vectorises."""
    # Below -60 the result rounds to -1; above 709.79 it overflows to inf through the last product.
    clamped = min(max(x, -60.0), 709.79)
    k = np.rint(clamped * _LOG2E)
    r = (clamped - k * _LN2_HI) - k * _LN2_LO
    q = _C13 * r + _C12
    q = q * r + _C11
    q = q * r + _C10
    q = q * r + _C9
    q = q * r + _C8
    q = q * r + _C7
    q = q * r + _C6
    q = q * r + _C5
    q = q * r + _C4
    q = q * r + _C3
    q = q * r + _C2
    p = r + r * r * q
    exponent = int(k)
    # 2^1024 is not a float64: take one factor 2 out and multiply it back in at the end.
    capped = min(exponent, 1023)
    scale = bits_as_float((capped + 1023) << 52)
    return (scale * p + (scale - 1.0)) * (1.0 + (exponent - capped))  # type: ignore[no-any-return]
