"""Cost of one step's ratio statistics on a CUDA GPU, against the cost of reading the inputs there.

Cases, measured side by side (round-robin), each call followed by ``torch.cuda.synchronize()``:
- floor: ``logp.sum() + logp_old.sum() + mask.count_nonzero()`` on the GPU, the least any
  statistic costs (``count_nonzero``, not ``mask.sum()``, which widens the mask to int64 first);
- naive torch: ``x = (logp - logp_old)[mask]; r = x.exp()``, one pass per statistic and
  ``torch.quantile`` (which refuses more than 16,777,216 elements, so above that it sorts ``r``);
- public: ``compute_step_partials(...)``, what ``run.log`` computes on the caller's thread;
- triton kernel: ``stats_triton.reduce_triton`` alone (statistics, sketch and k-hat tail), what
  the public call runs on CUDA;
- torch ops: the eager fallback, ``stats_torch.reduce_torch`` plus ``khat.top_torch``, and
  ``topk tail``, the latter alone.

Before timing, every size is checked against the host kernel on the same tokens: the finalized
statistics must agree (sums to 1e-9 relative, quantiles and sketch bins exactly).

Usage: python benchmarks/bench_cuda.py [--tokens 16777216 67108864] [--width 4096] [--repeats 7]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench_stats import CLIP, make_step, measure, report
from ratiowatch.khat import top_torch
from ratiowatch.stats import QUANTILES, compute_step_partials
from ratiowatch.stats_torch import reduce_torch
from ratiowatch.stats_triton import reduce_triton

Case = Callable[[], object]


def synchronized(function: Case) -> Case:
    def call() -> object:
        out = function()
        torch.cuda.synchronize()
        return out

    return call


def naive(logp: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    diff = logp - logp_old
    x = diff[mask]
    r = x.exp()
    ranked = r if r.numel() <= 1 << 24 else r.sort().values
    q = torch.tensor(QUANTILES, device=r.device)
    return {
        "mean": r.mean(),
        "std": r.std(),
        "min": r.min(),
        "max": r.max(),
        "quantiles": torch.quantile(ranked, q)
        if ranked is r
        else ranked[(q * (r.numel() - 1)).long()],
        "ess": r.sum() ** 2 / (r.numel() * (r * r).sum()),
        "clip_low": (r < 1 - CLIP).float().mean(),
        "clip_high": (r > 1 + CLIP).float().mean(),
        "kl_k1": (-x).mean(),
        "kl_k2": (x * x / 2).mean(),
        "kl_k3": (torch.expm1(x) - x).mean(),
        "logratio_mean": x.mean(),
        "logratio_std": x.std(),
        "seq": torch.where(mask, diff, 0)
        .sum(dim=1)
        .quantile(torch.tensor([0.5, 0.99], device=r.device)),
    }


def check_against_host(step: dict[str, np.ndarray], tensors: dict[str, torch.Tensor]) -> None:
    on_host = compute_step_partials(**step)["ppo"]
    on_gpu = compute_step_partials(**tensors)["ppo"]
    np.testing.assert_array_equal(on_host.sketch.bins, on_gpu.sketch.bins)
    host, gpu = on_host.finalize(), on_gpu.finalize()
    for key, want in host.items():
        got = gpu[key]
        if want is None or got is None:
            assert want is got, key
        else:
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (key, got, want)


def cases(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[Callable[[], None], Case]]:
    logp, logp_old, mask = tensors["logp"], tensors["logp_old"], tensors["mask"]
    low, high = math.log1p(-CLIP), math.log1p(CLIP)
    table = {
        "floor": lambda: logp.sum() + logp_old.sum() + mask.count_nonzero(),
        "naive torch": lambda: naive(logp, logp_old, mask),
        "public": lambda: compute_step_partials(**tensors),
        "triton kernel": lambda: reduce_triton(logp, logp_old, mask, None, low, high),
        "torch ops": lambda: (
            reduce_torch(logp, logp_old, mask, None, low, high),
            top_torch(logp, logp_old, mask),
        ),
        "topk tail": lambda: top_torch(logp, logp_old, mask),
    }
    return {name: (lambda: None, synchronized(case)) for name, case in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16 * 2**20, 64 * 2**20])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    for tokens in args.tokens:
        step = make_step(tokens, args.width if tokens > 4096 else 512)
        tensors = {key: torch.from_numpy(value).cuda() for key, value in step.items()}
        check_against_host(step, tensors)
        calls = 100 if tokens <= 1 << 16 else 1
        small = calls > 1
        shape = tuple(tensors["logp"].shape)
        report(
            f"{tokens} tokens on the GPU, float32 {list(shape)}, 80% masked in",
            measure(cases(tensors), args.repeats, calls),
            "us" if small else "ms",
            1e6 if small else 1e3,
            naive_case="naive torch",
        )
        del tensors
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
