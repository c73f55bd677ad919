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

from ratiowatch.expm1_poly import EXPM1_MAX_X, LN2_HI, LN2_LO, LOG2E, Q

__all__ = [
    "EXPM1_MAX_X",
    "ZERO_KEY",
    "bits_as_float",
    "expm1",
    "float_as_bits",
    "key_value",
    "order_key",
]

_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9 = Q  # numba freezes module-level floats
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
    """expm1 (``expm1_poly``) of a finite x with |x| <= ``EXPM1_MAX_X``, in branch-free arithmetic
    so that the token loop vectorises. Beyond that range (ratios past 1e307 or below 1e-307) the
    result is meaningless: the caller checks its extremes and redoes those tokens with
    ``math.expm1``.

    No clamp of x: two vector operations per 8 tokens for values that no healthy run produces,
    when the caller knows its extremes anyway.
    """
    k = np.rint(x * LOG2E)
    r = (x - k * LN2_HI) - k * LN2_LO
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
