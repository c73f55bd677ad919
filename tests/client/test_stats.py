from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ratiowatch import stats_numpy
from ratiowatch.errors import InvalidArgumentError
from ratiowatch.khat import TAIL_SIZE, top_numpy, top_torch
from ratiowatch.sketch import RELATIVE_ACCURACY, RatioSketch
from ratiowatch.stats import (
    QUANTILE_KEYS,
    QUANTILES,
    SCALAR_FIELDS,
    FamilyPartial,
    combine_scalars,
    compute_partial,
    compute_step_partials,
)
from ratiowatch.stats_numpy import reduce_numpy, reduce_numpy_tail
from ratiowatch.stats_torch import reduce_torch

from .devices import TORCH_DEVICES

CLIP = (0.2, 0.28)


def reference(
    x_all: np.ndarray,
    mask: np.ndarray | None = None,
    advantages: np.ndarray | None = None,
    clip: tuple[float, float] = CLIP,
) -> dict[str, Any]:
    """DESIGN section 3, written out plainly in float64."""
    x_all = np.asarray(x_all, dtype=np.float64)
    mask = np.ones(x_all.shape, dtype=bool) if mask is None else mask
    finite = np.isfinite(x_all)
    valid = mask & finite
    x = x_all[valid]
    r = np.exp(x)
    n = x.size
    out: dict[str, Any] = {"count": n, "nonfinite": int(np.count_nonzero(mask & ~finite))}
    out.update(mean=r.mean(), std=r.std(), min=r.min(), max=r.max())
    ranked = np.sort(r)
    for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True):
        out[key] = ranked[max(1, math.ceil(q * n)) - 1]
    out["ess"] = r.sum() ** 2 / (n * (r**2).sum())
    out["clip_low"] = np.mean(r < 1 - clip[0])
    out["clip_high"] = np.mean(r > 1 + clip[1])
    if advantages is not None:
        a = advantages if advantages.shape == x_all.shape else advantages[:, None]
        a = np.broadcast_to(a, x_all.shape)[valid]
        active = ((r > 1 + clip[1]) & (a > 0)) | ((r < 1 - clip[0]) & (a < 0))
        out["clip_active"] = active.mean()
    out.update(kl_k1=np.mean(-x), kl_k2=np.mean(x**2 / 2), kl_k3=np.mean(np.expm1(x) - x))
    out.update(logratio_mean=x.mean(), logratio_std=x.std())
    if x_all.ndim == 2:
        sums = np.where(valid, x_all, 0.0).sum(axis=1)
        counts = valid.sum(axis=1)
        s, c = sums[counts > 0], counts[counts > 0]
        w = np.exp(s - s.max())
        out.update(
            seq_logratio_p50=np.quantile(s, 0.5),
            seq_logratio_p99=np.quantile(s, 0.99),
            seq_logratio_min=s.min(),
            seq_logratio_max=s.max(),
            seq_ess=w.sum() ** 2 / (s.size * (w**2).sum()),
            seq_geo_p1=np.quantile(np.exp(s / c), 0.01),
            seq_geo_p50=np.quantile(np.exp(s / c), 0.5),
            seq_geo_p99=np.quantile(np.exp(s / c), 0.99),
        )
    return out


def assert_matches(stats: dict[str, float | None], expected: dict[str, Any], rtol: float) -> None:
    for key, want in expected.items():
        got = stats[key]
        assert got is not None, key
        if key in QUANTILE_KEYS:
            assert abs(got - want) <= RELATIVE_ACCURACY * (1 + 1e-9) * want, (key, got, want)
        else:
            assert got == pytest.approx(want, rel=rtol, abs=1e-300), key
    assert set(stats) >= set(expected)


def heavy_tailed_step(seed: int, rows: int = 32, width: int = 700) -> dict[str, np.ndarray]:
    """Student-t log-ratios with NaN/Inf both inside and outside the mask, a few empty rows."""
    rng = np.random.default_rng(seed)
    logp_old = -rng.exponential(2.0, (rows, width))
    logp = logp_old + rng.standard_t(3, (rows, width)) * 3
    mask = rng.random((rows, width)) < 0.7
    mask[:2] = False
    logp[rng.random((rows, width)) < 0.01] = np.nan
    logp[rng.random((rows, width)) < 0.005] = np.inf
    logp_old[rng.random((rows, width)) < 0.005] = -np.inf
    return {"logp": logp, "logp_old": logp_old, "mask": mask, "adv": rng.standard_normal(rows)}


def test_no_torch_import_for_numpy_statistics() -> None:
    code = (
        "import sys, numpy as np; from ratiowatch.stats import compute_partial; "
        "compute_partial(np.zeros((2, 3))).finalize(); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_matches_reference(dtype: type) -> None:
    step = heavy_tailed_step(0)
    logp, logp_old = step["logp"].astype(dtype), step["logp_old"].astype(dtype)
    x_all = logp.astype(np.float64) - logp_old.astype(np.float64)
    expected = reference(x_all, step["mask"], step["adv"])
    assert expected["nonfinite"] > 0
    assert np.isfinite(x_all[~step["mask"]]).mean() < 1  # non-finite values outside the mask too
    partials = compute_step_partials(
        logp=logp, logp_old=logp_old, mask=step["mask"], advantages=step["adv"], clip=CLIP
    )
    assert list(partials) == ["ppo"]
    assert_matches(partials["ppo"].finalize(), expected, rtol=1e-9)


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", ["public", "torch"])
def test_torch_matches_reference(dtype: torch.dtype, kernel: str, device: str) -> None:
    step = heavy_tailed_step(1)
    logp, logp_old, mask, adv = (
        torch.from_numpy(step[key]).to(device) for key in ("logp", "logp_old", "mask", "adv")
    )
    logp, logp_old = logp.to(dtype), logp_old.to(dtype)
    x_all = logp.double().cpu().numpy() - logp_old.double().cpu().numpy()
    expected = reference(x_all, step["mask"], step["adv"])
    if kernel == "public":
        partial = compute_step_partials(
            logp=logp, logp_old=logp_old, mask=mask, advantages=adv, clip=CLIP
        )["ppo"]
    else:  # the device kernel, also on CPU tensors
        partial = partial_from(reduce_torch(logp, logp_old, mask, adv, *thresholds(CLIP)), True)
    assert_matches(partial.finalize(), expected, rtol=1e-9)


def thresholds(clip: tuple[float, float]) -> tuple[float, float]:
    return math.log1p(-clip[0]), math.log1p(clip[1])


def partial_from(reduced: tuple[Any, ...], with_advantages: bool) -> FamilyPartial:
    table, bins, seq_sum, seq_count = reduced
    return FamilyPartial.from_scalars(
        combine_scalars(table),
        sketch=RatioSketch.from_bins(bins),
        seq_sum=seq_sum,
        seq_count=seq_count,
        with_advantages=with_advantages,
    )


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_sixty_four_million_tokens_need_no_sort(device: str) -> None:
    """4x the 16,777,216 elements past which ``torch.quantile`` refuses, on the host kernel and
    on the device kernel. The step repeats one heavy-tailed row, so its statistics
    are that row's, computed by the plain reference on four copies of it."""
    step = heavy_tailed_step(3, rows=3, width=4096)
    logp, logp_old = (step[key][2:].astype(np.float32) for key in ("logp", "logp_old"))
    mask, adv = step["mask"][2:], step["adv"][2:]
    x_row = logp.astype(np.float64) - logp_old
    expected = reference(np.tile(x_row, (4, 1)), np.tile(mask, (4, 1)), np.tile(adv, 4))
    copies = (1 << 26) // x_row.size
    expected["count"] *= copies // 4
    expected["nonfinite"] *= copies // 4
    tensors = [torch.from_numpy(np.tile(a, (copies, 1))) for a in (logp, logp_old, mask)]
    tensors.append(torch.from_numpy(np.tile(adv, copies)))
    assert tensors[0].numel() == 1 << 26
    on_host = compute_step_partials(
        logp=tensors[0], logp_old=tensors[1], mask=tensors[2], advantages=tensors[3], clip=CLIP
    )["ppo"]
    assert_matches(on_host.finalize(), expected, rtol=1e-9)
    tensors = [tensor.to(device) for tensor in tensors]
    on_device = partial_from(reduce_torch(*tensors, *thresholds(CLIP)), True)
    assert_matches(on_device.finalize(), expected, rtol=1e-9)
    tail = top_torch(*tensors[:3])
    np.testing.assert_array_equal(tail, np.full(TAIL_SIZE, x_row[mask & np.isfinite(x_row)].max()))


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_torch_kernel_agrees_with_numpy_kernel_bin_for_bin(device: str) -> None:
    step = heavy_tailed_step(2)
    args = (step["logp"], step["logp_old"], step["mask"], step["adv"], *thresholds(CLIP))
    on_host = reduce_numpy(*args)
    on_device = reduce_torch(
        *(torch.from_numpy(a).to(device) if isinstance(a, np.ndarray) else a for a in args)
    )
    np.testing.assert_array_equal(on_host[1], on_device[1])
    np.testing.assert_array_equal(on_host[3], on_device[3])
    np.testing.assert_allclose(on_host[2], on_device[2], rtol=1e-12)
    np.testing.assert_allclose(
        combine_scalars(on_host[0]), combine_scalars(on_device[0]), rtol=1e-12
    )


def test_row_bands_on_threads_give_the_one_band_result(monkeypatch: pytest.MonkeyPatch) -> None:
    step = heavy_tailed_step(5, rows=40, width=900)
    args = (step["logp"], step["logp_old"], step["mask"], step["adv"], *thresholds(CLIP))
    whole = reduce_numpy_tail(*args)
    monkeypatch.setattr(stats_numpy, "_TOKENS_PER_THREAD", 4000)
    monkeypatch.setattr(stats_numpy._POOL, "threads", 3)
    assert len(stats_numpy._row_bands(step["logp"].shape)) == 3
    banded = reduce_numpy_tail(*args)
    np.testing.assert_allclose(combine_scalars(banded[0]), combine_scalars(whole[0]), rtol=1e-12)
    for exact in (1, 2, 3):  # bins, per-row sums (each row lies in one band), per-row counts
        np.testing.assert_array_equal(banded[exact], whole[exact])
    np.testing.assert_array_equal(np.sort(banded[4]), np.sort(whole[4]))
    np.testing.assert_array_equal(np.sort(whole[4]), np.sort(top_numpy(*args[:3])))


@pytest.mark.parametrize("shape", [(3, 2500), (40, 900), (5000,)])
def test_numpy_chunks_split_long_rows_and_group_short_ones(
    shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_numpy, "_CHUNK", 1000)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 0.1
    mask = rng.random(x.shape) < 0.9
    partial = partial_from(reduce_numpy(x, None, mask, None, *thresholds(CLIP)), False)
    assert_matches(partial.finalize(), reference(x, mask), rtol=1e-9)


def test_per_token_advantages() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 50))
    adv = rng.standard_normal((6, 50))
    stats = compute_partial(x, advantages=adv, clip=CLIP).finalize()
    assert stats["clip_active"] == pytest.approx(reference(x, None, adv)["clip_active"])


def test_one_dimensional_input_has_no_sequence_statistics() -> None:
    x = np.random.default_rng(5).standard_normal(1000)
    stats = compute_partial(x, clip=CLIP).finalize()
    token_level = {k: v for k, v in reference(x).items() if not k.startswith("seq_")}
    assert_matches(stats, token_level, rtol=1e-9)
    assert stats["seq_ess"] is None and stats["seq_geo_p50"] is None
    assert "clip_active" not in stats


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_float32_logratios_up_to_sixty_stay_finite_and_accurate(device: str) -> None:
    rng = np.random.default_rng(6)
    logp_old = (-rng.exponential(1.0, (16, 256))).astype(np.float32)
    logp = (logp_old + rng.uniform(-60, 60, (16, 256))).astype(np.float32)
    logp[0, 0], logp_old[0, 0] = 0.0, np.float32(-60.0)
    x_all = logp.astype(np.float64) - logp_old.astype(np.float64)
    expected = reference(x_all)
    tensors = (torch.from_numpy(logp).to(device), torch.from_numpy(logp_old).to(device))
    for inputs in [(logp, logp_old), tensors]:
        stats = compute_step_partials(logp=inputs[0], logp_old=inputs[1], clip=CLIP)["ppo"]
        assert_matches(stats.finalize(), expected, rtol=1e-9)
    torch_kernel = reduce_torch(*tensors, None, None, 0, 0)
    assert partial_from(torch_kernel, False).finalize()["ess"] == pytest.approx(expected["ess"])


def test_ratios_near_one_keep_their_spread() -> None:
    rng = np.random.default_rng(7)
    x = 1e-7 + rng.standard_normal(10_000) * 1e-9  # E[r^2] - E[r]^2 would cancel to noise
    stats = compute_partial(x).finalize()
    expected = reference(x)
    for key in ("std", "kl_k2", "kl_k3", "logratio_std", "mean"):
        assert stats[key] == pytest.approx(expected[key], rel=1e-6), key


def test_tiny_ratios_keep_their_spread() -> None:
    x = np.random.default_rng(8).standard_normal(5_000) - 60  # every r ~ 1e-26
    stats = compute_partial(x).finalize()
    expected = reference(x)
    for key in ("std", "mean", "ess", "kl_k3"):
        assert stats[key] == pytest.approx(expected[key], rel=1e-9), key


def test_ratios_beyond_float64_give_none_not_nan() -> None:
    x = np.zeros((4, 100))
    x[1, 7] = 800.0  # r = e^800 overflows float64
    stats = compute_partial(x).finalize()
    for key in ("mean", "std", "max", "kl_k3", "p99.9"):
        assert stats[key] is None, key
    assert stats["ess"] == pytest.approx(1 / 400)
    assert stats["kl_k1"] == pytest.approx(-2.0)
    assert stats["p50"] == 1.0  # clamped into [min, max], exact for ties
    assert stats["seq_ess"] == pytest.approx(1 / 4)
    assert all(v is None or math.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize(
    "shape_and_mask",
    [((0,), None), ((0, 5), None), ((3, 0), None), ((4, 8), "none"), ((4, 8), "nan")],
)
def test_empty_steps_give_counts_and_nones(shape_and_mask: tuple[Any, Any], device: str) -> None:
    shape, kind = shape_and_mask
    logp = np.full(shape, np.nan) if kind == "nan" else np.zeros(shape)
    mask = None if kind is None else np.zeros(shape, dtype=bool) if kind == "none" else None
    adv = np.zeros(shape[:1])
    for backend in (np.asarray, lambda a: torch.from_numpy(a).to(device)):
        args = {"logp": backend(logp), "logp_old": backend(np.zeros(shape))}
        if mask is not None:
            args["mask"] = backend(mask)
        stats = compute_step_partials(**args, advantages=backend(adv))["ppo"].finalize()
        assert stats["count"] == 0
        assert stats["nonfinite"] == (logp.size if kind == "nan" else 0)
        assert "clip_active" in stats
        assert all(v is None for k, v in stats.items() if k not in ("count", "nonfinite"))


def test_families() -> None:
    a, b, c = np.zeros(4), np.full(4, -1.0), np.full(4, -3.0)
    assert list(compute_step_partials(logp=a, logp_old=b, logp_behavior=c)) == ["ppo", "mismatch"]
    offpolicy = compute_step_partials(logp=a, logp_behavior=c)
    assert list(offpolicy) == ["offpolicy"]
    assert offpolicy["offpolicy"].finalize()["kl_k1"] == pytest.approx(-3.0)
    assert compute_step_partials(logp=a) == {}
    mismatch = compute_step_partials(logp_old=b, logp_behavior=c)["mismatch"].finalize()
    assert mismatch["logratio_mean"] == pytest.approx(2.0)


@pytest.mark.parametrize("clip", [(-0.1, 0.2), (0.2, math.inf), ("a", 0.2), (0.2,)])
def test_bad_clip_is_rejected(clip: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="clip is"):
        compute_partial(np.zeros(3), clip=clip)


def test_input_arrays_are_not_modified() -> None:
    x = np.array([[np.nan, 1.0, 2.0]])
    compute_partial(x, np.array([[True, False, True]]))
    np.testing.assert_array_equal(x, [[np.nan, 1.0, 2.0]])


def assert_partials_equal(merged: FamilyPartial, whole: FamilyPartial) -> None:
    assert merged.sketch == whole.sketch
    np.testing.assert_array_equal(merged.seq_count, whole.seq_count)
    np.testing.assert_allclose(merged.seq_sum, whole.seq_sum, rtol=1e-12, atol=1e-12)
    magnitude = abs(whole.sum_x) + whole.sum_x2 + whole.count
    for name in SCALAR_FIELDS:
        got, want = getattr(merged, name), getattr(whole, name)
        if isinstance(want, int):
            assert got == want, name
        else:
            atol = 1e-12 * magnitude if name in ("sum_x", "sum_e") else 0.0
            assert got == pytest.approx(want, rel=1e-12, abs=atol), name


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 8),
    width=st.integers(1, 40),
    scale=st.sampled_from([1e-6, 0.1, 3.0, 100.0]),
    split=st.floats(0, 1),
    one_dimensional=st.booleans(),
)
def test_merge_of_a_split_equals_the_whole(
    seed: int, rows: int, width: int, scale: float, split: float, one_dimensional: bool
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_t(2, (rows, width)) * scale
    x[rng.random(x.shape) < 0.05] = np.nan
    mask = rng.random(x.shape) < 0.8
    adv = rng.standard_normal(rows)
    if one_dimensional:
        x, mask, adv = x.ravel(), mask.ravel(), None
    cut = round(split * x.shape[0])
    whole = compute_partial(x, mask, advantages=adv)
    parts = [
        compute_partial(x[part], mask[part], advantages=None if adv is None else adv[part])
        for part in (slice(0, cut), slice(cut, None))
    ]
    merged = parts[0].merge(parts[1])
    assert_partials_equal(merged, whole)
    assert merged.finalize().keys() == whole.finalize().keys()


def test_collective_protocol_equals_merge() -> None:
    rng = np.random.default_rng(9)
    ranks = [
        compute_partial(rng.standard_normal((4, 30)) * s, advantages=rng.standard_normal(4))
        for s in (0.1, 5.0, 40.0)
    ]
    ranks.append(FamilyPartial.empty())
    extremes = np.max([p.collective_arrays(0.0)[1] for p in ranks], axis=0)
    sums = np.sum([p.collective_arrays(extremes[0])[0] for p in ranks], axis=0)
    reduced = FamilyPartial.from_collective(
        sums,
        extremes,
        bins=np.sum([p.sketch.bins for p in ranks], axis=0),
        seq_sum=np.concatenate([p.seq_sum for p in ranks]),
        seq_count=np.concatenate([p.seq_count for p in ranks]),
        with_advantages=True,
    )
    merged = ranks[0].merge(ranks[1]).merge(ranks[2]).merge(ranks[3])
    assert_partials_equal(reduced, merged)
