"""Constants of the branch-free float64 expm1 that the JIT kernels inline (numba's and Triton's).

expm1 by Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, and p(r) = r + r^2 q(r), with q the
degree-9 Chebyshev interpolant of (expm1(r) - r) / r^2 on [-ln2/2, ln2/2] (mpmath.chebyfit, 10
terms; error 1.05e-16, 3.6e-17 relative to expm1(r)): two terms fewer than the Taylor polynomial
of equal accuracy. Then expm1(x) = 2^k p + (2^k - 1): within about 1 ulp for every x
(tests/client/test_stats_numba.py), and no cancellation near 0, where k = 0.

Here, apart from numba_math, so that the Triton kernel needs no numba.
"""

from __future__ import annotations

__all__ = ["EXPM1_MAX_X", "EXPM1_MIN_X", "LN2_HI", "LN2_LO", "LOG2E", "Q"]

# The largest |x| for which 2^k is a float64 (|k| <= 1023; the bits of 2^-1023 read as 0, where
# expm1 is -1 anyway).
EXPM1_MAX_X = 709.0
EXPM1_MIN_X = -60.0  # below, expm1 rounds to -1
LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # fdlibm's split: k * LN2_HI is exact for |k| < 2^11
LN2_LO = 1.90821492927058770002e-10
Q = (  # q's coefficients, constant term first
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
