from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba", reason="numba (the [fast] extra) is not installed")

import numba

from ratiowatch.khat import TAIL_SIZE, top_numpy
from ratiowatch.numba_math import EXPM1_MAX_X, expm1
from ratiowatch.sketch import LN_GAMMA
from ratiowatch.stats import SCALAR_FIELDS, combine_scalars
from ratiowatch.stats_numba import PARALLEL_MIN_TOKENS, reduce_numba, reduce_numba_tail
from ratiowatch.stats_numpy import fast_reducer, reduce_numpy

CLIP = (math.log1p(-0.2), math.log1p(0.28))  # asymmetric, in log space
Reduction = tuple[Any, ...]


@pytest.fixture
def threads() -> Iterator[None]:
    """Restores numba's thread count after a test that changes it."""
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def heavy_tailed(
    seed: int, shape: tuple[int, ...], dtype: type = np.float64
) -> dict[str, np.ndarray]:
    """Student-t log-ratios, NaN/Inf inside and outside the mask, a fully masked-out row."""
    rng = np.random.default_rng(seed)
    logp_old = -rng.exponential(2.0, shape)
    logp = logp_old + rng.standard_t(3, shape) * 3
    mask = rng.random(shape) < 0.7
    mask[:1] = False
    logp[rng.random(shape) < 0.01] = np.nan
    logp[rng.random(shape) < 0.005] = np.inf
    logp_old[rng.random(shape) < 0.005] = -np.inf
    return {
        "new": logp.astype(dtype),
        "old": logp_old.astype(dtype),
        "mask": mask,
        "row_adv": rng.standard_normal(shape[:1]),
        "token_adv": rng.standard_normal(shape).astype(dtype),
    }


def assert_same(fast: Reduction, slow: Reduction, x: np.ndarray, valid: np.ndarray) -> None:
    """Bins and counts identical; sums equal up to summation order (1e-12 of their magnitude)."""
    np.testing.assert_array_equal(fast[1], slow[1])
    np.testing.assert_array_equal(fast[3], slow[3])
    x = np.where(valid, x, 0.0)
    if x.ndim == 2:
        row_magnitude = np.abs(x).sum(axis=1)
        assert np.all(np.abs(fast[2] - slow[2]) <= 1e-12 * row_magnitude), (fast[2], slow[2])
    else:
        assert fast[2].shape == slow[2].shape == (0,)
    got, want = combine_scalars(fast[0]), combine_scalars(slow[0])
    with np.errstate(over="ignore"):
        magnitude = {"sum_x": np.abs(x).sum(), "sum_e": np.abs(np.expm1(x)).sum()}
    for i, name in enumerate(SCALAR_FIELDS):
        if name in magnitude:
            assert got[i] == pytest.approx(want[i], rel=1e-12, abs=1e-12 * magnitude[name]), name
        else:
            assert got[i] == pytest.approx(want[i], rel=1e-12, abs=1e-300), name


def check(new: Any, old: Any, mask: Any, advantages: Any, clip: tuple[float, float]) -> None:
    args = (new, old, mask, advantages, *clip)
    x = np.asarray(new, dtype=np.float64)
    if old is not None:
        x = x - np.asarray(old, dtype=np.float64)
    valid = np.isfinite(x) & (True if mask is None else mask)
    assert_same(reduce_numba(*args), reduce_numpy(*args), x, valid)


@numba.njit
def inline_expm1(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = expm1(x[i])
    return out


def test_inline_expm1_is_within_about_one_ulp() -> None:
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.standard_normal(20_000) * s for s in (1e-9, 1e-3, 0.3, 3, 30, 300)])
    x = np.concatenate([x[np.abs(x) < EXPM1_MAX_X], [0.0, -0.0, 5e-324, -EXPM1_MAX_X, EXPM1_MAX_X]])
    np.testing.assert_allclose(inline_expm1(x), np.expm1(x), rtol=4e-16, atol=0)


@pytest.mark.parametrize("beyond", [709.5, -709.5, -745.0, -1e300])
def test_ratios_beyond_the_inline_expm1(beyond: float) -> None:
    """Past |x| = EXPM1_MAX_X the inline expm1 is meaningless (it clamps nothing): the kernel
    redoes such pieces with math.expm1 (finite up to x = 709.78, -1 far below)."""
    x = np.random.default_rng(8).standard_normal((3, 1500))
    x[1, 7] = beyond
    check(x, None, None, None, CLIP)


def test_the_host_entry_point_uses_numba_when_installed() -> None:
    assert fast_reducer() is reduce_numba_tail


def test_importing_ratiowatch_does_not_import_numba() -> None:
    code = "import sys, ratiowatch; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("adv", "shape"),
    [
        (adv, shape)
        for shape in [(37, 700), (5000,), (3, 5000)]
        for adv in [None, "row", "token"]
        if not (adv == "row" and len(shape) == 1)  # 1-D input has no rows
    ],
)
def test_numba_agrees_with_numpy(dtype: type, adv: str | None, shape: tuple[int, ...]) -> None:
    step = heavy_tailed(0, shape, dtype)
    advantages = None if adv is None else step[f"{adv}_adv"]
    check(step["new"], step["old"], step["mask"], advantages, CLIP)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 40)),
    scale=st.sampled_from([1e-6, 0.1, 3.0, 100.0]),
    shift=st.sampled_from([0.0, -1.0, 1.0]),
    one_dimensional=st.booleans(),
)
def test_small_random_steps_agree(
    seed: int, shape: tuple[int, int], scale: float, shift: float, one_dimensional: bool
) -> None:
    rng = np.random.default_rng(seed)
    x = shift + rng.standard_t(2, shape) * scale
    x[rng.random(shape) < 0.05] = np.nan
    mask = rng.random(shape) < 0.8
    adv = rng.standard_normal(shape[:1])
    if one_dimensional:
        x, mask, adv = x.ravel(), mask.ravel(), None
    check(x, None, mask, adv, CLIP)


@pytest.mark.parametrize("masked", [True, False])
def test_without_old_or_mask(masked: bool) -> None:
    step = heavy_tailed(1, (9, 300))
    check(step["new"], None, step["mask"] if masked else None, step["row_adv"], (0.0, 0.0))


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0), (4, 8)])
def test_empty_and_all_masked(shape: tuple[int, ...]) -> None:
    new = np.full(shape, np.nan)
    old, mask = np.zeros(shape), np.zeros(shape, dtype=bool)
    check(new, old, mask, np.zeros(shape[:1]), CLIP)
    check(new, old, None, None, CLIP)  # every token non-finite


def test_bucket_boundaries_land_in_the_same_bins() -> None:
    k = np.arange(-4400, 4400, 7, dtype=np.float64)
    edges = k * LN_GAMMA
    special = [0.0, -0.0, 5e-324, -5e-324, 87.5, -87.5, 1e300, -1e300, 709.9, -745.2]
    x = np.concatenate(
        [edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), np.array(special)]
    )
    check(x, None, None, None, CLIP)
    check(x.reshape(2, -1), None, None, None, CLIP)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_invalid_tokens_do_not_hide_extremes(sign: float) -> None:
    x = sign * (np.random.default_rng(2).random((6, 500)) + 0.5)  # all positive or all negative
    x[:, ::7] = np.nan
    mask = np.ones(x.shape, dtype=bool)
    mask[:, ::5] = False
    check(x, None, mask, None, CLIP)


@pytest.mark.parametrize("scale", [1e-9, 1.0, 60.0, 400.0])
@pytest.mark.parametrize("shift", [0.0, -60.0, 800.0])
def test_extreme_ratios(scale: float, shift: float) -> None:
    """Tiny, huge and overflowing ratios take the exp fallback or overflow sum_e the same way."""
    rng = np.random.default_rng(3)
    x = shift + rng.standard_normal((4, 3000)) * scale
    check(x, None, rng.random(x.shape) < 0.9, None, CLIP)


def test_non_contiguous_and_other_dtypes() -> None:
    step = heavy_tailed(4, (600, 40), np.float32)
    new, old, mask = step["new"].T, step["old"].T, step["mask"].T
    check(new, old, mask, np.arange(40) - 20, CLIP)  # integer per-row advantages
    check(new.astype(np.float16), old, mask, np.sign(step["token_adv"].T).astype(np.int8), CLIP)


@pytest.mark.parametrize("shape", [(64, 4096), (4, 70_000), (PARALLEL_MIN_TOKENS + 17,)])
@pytest.mark.parametrize("count", [1, 2])
def test_thread_counts_agree(shape: tuple[int, ...], count: int, threads: None) -> None:
    """Blocks split rows anywhere; each thread's sums and bins must add up to the same result."""
    if count > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba has {numba.config.NUMBA_NUM_THREADS} threads")
    numba.set_num_threads(count)
    step = heavy_tailed(5, shape, np.float32)
    advantages = step["token_adv"] if len(shape) == 1 else step["row_adv"]
    check(step["new"], step["old"], step["mask"], advantages, CLIP)


def check_tail(new: Any, old: Any, mask: Any) -> None:
    """The kernel's tail is top_numpy's, as a multiset."""
    got = reduce_numba_tail(new, old, mask, None, *CLIP)[4]
    assert got.dtype == np.float64
    np.testing.assert_array_equal(np.sort(got), np.sort(top_numpy(new, old, mask)))


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(3, 100), (9, 4000), (64, 4096), (5, 70_001), (PARALLEL_MIN_TOKENS + 17,)]
)
def test_tail_equals_top_numpy(
    shape: tuple[int, ...], dtype: type, count: int, threads: None
) -> None:
    """Heavy tails, NaN/Inf masked in and out, ties (float32 and rounded copies)."""
    if count > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba has {numba.config.NUMBA_NUM_THREADS} threads")
    numba.set_num_threads(count)
    step = heavy_tailed(7, shape, dtype)
    new, old, mask = step["new"], step["old"], step["mask"]
    check_tail(new, old, mask)
    check_tail(new, None, mask)
    check_tail(new, old, None)
    tied = np.round(new.astype(np.float64) - old, 1).astype(dtype)  # many exact ties at the top
    check_tail(tied, None, None)
    check_tail(tied, np.zeros_like(tied), mask)


@pytest.mark.parametrize("shift", [-200.0, 200.0])
def test_tail_beyond_the_sketch_range(shift: float) -> None:
    """The screen compares tokens from the bar's sketch bin up; here that bin is clamped to the
    zero or the overflow bin (ratios beyond 1e-38 and 1e38), which holds every token."""
    x = shift + np.random.default_rng(10).standard_normal((4, 70_000))
    check_tail(x, None, None)
    check_tail(x, None, x > shift)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (4, 8), (2, 70_000), (2, 140_000)])
def test_tail_of_empty_all_masked_and_constant_steps(shape: tuple[int, ...]) -> None:
    """Also steps where every x ties: the tail is that one value, repeated."""
    new = np.full(shape, np.nan)
    check_tail(new, np.zeros(shape), np.zeros(shape, dtype=bool))
    check_tail(new, None, None)  # every token non-finite
    check_tail(np.zeros(shape), None, np.ones(shape, dtype=bool))  # one bucket holds everything
    check_tail(np.ones(shape, dtype=np.float32), np.ones(shape, dtype=np.float32), None)
    step = heavy_tailed(8, shape)
    sparse = np.random.default_rng(9).random(shape) < 0.01  # fewer valid tokens than TAIL_SIZE
    assert np.count_nonzero(sparse) < TAIL_SIZE
    check_tail(step["new"], step["old"], sparse)
