"""PSIS k-hat: agreement with arviz, the bounded tail, and exact merging."""

from __future__ import annotations

import warnings

import arviz
import numpy as np
import pytest
import torch

from ratiowatch.khat import TAIL_SIZE, merge_tails, psis_khat, top_numpy, top_torch
from ratiowatch.stats import compute_partial

from .devices import TORCH_DEVICES


def arviz_khat(log_weights: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns about k > 0.7, which is the point here
        _, k = arviz.psislw(np.array(log_weights, dtype=np.float64))
    return float(k)


def log_weights(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal-narrow":
        return rng.normal(0.0, 0.1, n)
    if kind == "normal":
        return rng.normal(0.0, 1.0, n)
    if kind == "pareto":  # ratios Pareto with tail index 1.3: k near 0.77
        return np.log1p(rng.pareto(1.3, n))
    return rng.standard_t(3, n)  # Student-t log-ratios: far heavier than any Pareto


@pytest.mark.parametrize(
    ("kind", "n", "low", "high"),
    [
        ("normal-narrow", 20_000, -1.0, 0.5),
        ("normal", 5_000, -1.0, 0.5),
        ("pareto", 8_000, 0.7, 1.0),
        ("pareto", 400, 0.5, 1.5),
        ("student-t", 10_000, 0.7, 5.0),
    ],
)
def test_khat_agrees_with_arviz(kind: str, n: int, low: float, high: float) -> None:
    x = log_weights(kind, n, seed=n)
    expected = arviz_khat(x)
    got = compute_partial(x).finalize()["khat"]
    assert got is not None and low < got < high
    assert got == pytest.approx(expected, abs=1e-9)


def test_seq_khat_is_khat_of_the_sequence_sums() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_t(3, (400, 32)) * 0.3
    mask = rng.random(x.shape) < 0.9
    stats = compute_partial(x, mask).finalize()
    assert stats["seq_khat"] == pytest.approx(arviz_khat(np.where(mask, x, 0).sum(axis=1)))


def test_too_few_tail_samples_give_none() -> None:
    assert compute_partial(np.zeros(10)).finalize()["khat"] is None
    assert psis_khat(np.zeros(0), 0) is None


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tail_is_the_largest_masked_finite_logratios(dtype: type, device: str) -> None:
    rng = np.random.default_rng(2)
    logp_old = (-rng.exponential(1.0, (300, 500))).astype(dtype)
    logp = (logp_old + rng.standard_t(3, logp_old.shape) * 0.1).astype(dtype)
    logp[rng.random(logp.shape) < 0.01] = np.nan
    logp[rng.random(logp.shape) < 0.001] = np.inf
    mask = rng.random(logp.shape) < 0.7
    x = logp.astype(np.float64) - logp_old.astype(np.float64)
    valid = x[mask & np.isfinite(x)]
    want = np.sort(valid)[-TAIL_SIZE:]
    np.testing.assert_array_equal(np.sort(top_numpy(logp, logp_old, mask)), want)
    tensors = [torch.from_numpy(a).to(device) for a in (logp, logp_old, mask)]
    np.testing.assert_array_equal(np.sort(top_torch(*tensors)), want)


def test_merged_partials_give_the_khat_of_the_whole() -> None:
    rng = np.random.default_rng(3)
    x = np.log1p(rng.pareto(1.1, (64, 300)))  # n = 19,200: M = 416, well inside the tail
    mask = rng.random(x.shape) < 0.85
    whole = compute_partial(x, mask)
    parts = [compute_partial(x[rows], mask[rows]) for rows in (slice(0, 5), slice(5, 40))]
    merged = parts[0].merge(parts[1]).merge(compute_partial(x[40:], mask[40:]))
    np.testing.assert_array_equal(np.sort(merged.tail), np.sort(whole.tail))
    assert merged.finalize()["khat"] == whole.finalize()["khat"]
    assert whole.finalize()["khat"] == pytest.approx(arviz_khat(x[mask]), abs=1e-9)


def test_beyond_the_cap_the_fit_uses_the_whole_tail() -> None:
    n = 2_000_000  # 3 sqrt(n) = 4243 > TAIL_SIZE - 1
    x = np.log1p(np.random.default_rng(4).pareto(1.5, n))
    tail = top_numpy(x, None, None)
    assert tail.size == TAIL_SIZE
    halves = merge_tails(top_numpy(x[: n // 3], None, None), top_numpy(x[n // 3 :], None, None))
    np.testing.assert_array_equal(np.sort(halves), np.sort(tail))
    khat = psis_khat(tail, n)
    # the capped fit (M = 4095 instead of 4243) stays close to arviz's full one
    assert khat is not None and khat == pytest.approx(arviz_khat(x), abs=0.05)
