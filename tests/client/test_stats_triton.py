"""The fused Triton kernel against the host kernel, token for token.

On a machine with a GPU the kernel is compiled and runs on CUDA tensors; elsewhere (CI) the Triton
interpreter runs the same kernel on CPU tensors. The interpreter is chosen when triton decorates
the kernel, so the environment variable is set before ``stats_triton`` is first imported.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from ratiowatch import stats_torch, stats_triton
from ratiowatch.stats import combine_scalars, compute_step_partials
from ratiowatch.stats_numpy import reduce_numpy_tail

from .test_stats import CLIP, heavy_tailed_step, thresholds

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(params=[1, 3], ids=["one program", "several programs"])
def multiprocessors(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU tensors the kernel would run as one program; 3 'multiprocessors' give 12 programs,
    so that row blocks loop, columns split, and programs' rows merge as on a GPU."""
    if DEVICE == "cpu":
        monkeypatch.setattr(stats_triton, "_multiprocessors", lambda device: request.param)


def on_device(*arrays: Any) -> list[Any]:
    return [torch.from_numpy(a).to(DEVICE) if isinstance(a, np.ndarray) else a for a in arrays]


def assert_same_reduction(host: tuple[Any, ...], device: tuple[Any, ...]) -> None:
    np.testing.assert_array_equal(host[1], device[1])  # sketch bins
    np.testing.assert_array_equal(host[3], device[3])  # per-row counts
    np.testing.assert_array_equal(np.sort(host[4]), np.sort(device[4]))  # k-hat tail
    np.testing.assert_allclose(host[2], device[2], rtol=1e-12)
    np.testing.assert_allclose(combine_scalars(host[0]), combine_scalars(device[0]), rtol=1e-12)


@pytest.mark.usefixtures("multiprocessors")
@pytest.mark.parametrize(
    ("rows", "width", "advantages"),
    [(32, 700, "per row"), (5, 3000, "per token"), (2, 9000, None), (1, 20000, "1-D")],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_agrees_with_the_host_kernel(
    rows: int, width: int, advantages: str | None, dtype: type
) -> None:
    step = heavy_tailed_step(4, rows=rows, width=width)
    logp, logp_old, mask = step["logp"].astype(dtype), step["logp_old"].astype(dtype), step["mask"]
    adv: Any = {
        "per row": step["adv"],
        "per token": np.random.default_rng(5).standard_normal((rows, width)),
        None: None,
    }.get(advantages)
    if advantages == "1-D":
        logp, logp_old, mask = logp[0], logp_old[0], mask[0]
    args = (logp, logp_old, mask, adv, *thresholds(CLIP))
    host = reduce_numpy_tail(*args)
    device = stats_triton.reduce_triton(*on_device(*args))
    assert device[4].size == min(4096, int(combine_scalars(host[0])[0]))
    assert_same_reduction(host, device)


@pytest.mark.usefixtures("multiprocessors")
def test_logratios_alone_and_beyond_the_inline_expm1() -> None:
    """No ``old`` (x given directly), no mask; x = 709.5 has a finite expm1 past the polynomial's
    range, and x = 1e-10 needs expm1's accuracy near 0."""
    x = np.array([709.5, 1e-10, -1e-10, -800.0, 50.0, -3.0, np.nan, 0.25, -np.inf, 2.0])
    host = reduce_numpy_tail(x, None, None, None, *thresholds(CLIP))
    device = stats_triton.reduce_triton(*on_device(x, None, None, None), *thresholds(CLIP))
    assert_same_reduction(host, device)
    sums = combine_scalars(device[0])
    finite = x[np.isfinite(x)]
    assert sums[6] == pytest.approx(sum(math.expm1(v) for v in finite), rel=1e-15)


def test_crowded_tail_bins_fall_back_to_topk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ties fill the bins the tail is copied from; past the cap the tail comes from topk."""
    monkeypatch.setattr(stats_triton, "_MAX_CANDIDATES", 100)
    x = np.zeros((4, 300))
    x[1, 3] = 5.0
    device = stats_triton.reduce_triton(*on_device(x, None, None, None), *thresholds(CLIP))
    expected = np.sort(x.ravel())[-1200:]
    np.testing.assert_array_equal(np.sort(device[4]), expected)


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0)])
def test_empty_steps(shape: tuple[int, ...]) -> None:
    x = np.zeros(shape)
    host = reduce_numpy_tail(x, None, None, None, *thresholds(CLIP))
    device = stats_triton.reduce_triton(*on_device(x, None, None, None), *thresholds(CLIP))
    assert_same_reduction(host, device)


@pytest.mark.skipif(
    DEVICE != "cuda", reason="no CUDA device: reduce_device picks Triton only there"
)
def test_public_path_falls_back_to_torch_ops_when_triton_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step = heavy_tailed_step(6)
    tensors = {k: torch.from_numpy(step[k]).cuda() for k in ("logp", "logp_old", "mask")}
    with_triton = compute_step_partials(**tensors)["ppo"].finalize()

    def broken(*args: object) -> None:
        raise RuntimeError("no compiler for this GPU")

    monkeypatch.setattr(stats_triton, "reduce_triton", broken)
    monkeypatch.setitem(stats_torch._triton, "usable", True)
    with_torch = compute_step_partials(**tensors)["ppo"].finalize()
    assert stats_torch._triton["usable"] is False
    assert with_torch.keys() == with_triton.keys()
    for key, value in with_triton.items():
        assert with_torch[key] == pytest.approx(value, rel=1e-9), key
