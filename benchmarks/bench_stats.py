"""Cost of one step's ratio statistics, against the cost of merely reading the inputs.

Baselines, measured side by side (round-robin, so machine noise hits them alike):
- floor: ``logp.sum() + logp_old.sum() + np.count_nonzero(mask)``, the least any statistic costs;
- naive: what a trainer would write inline: ``x = (logp - logp_old)[mask]; r = np.exp(x)``, one
  numpy pass per statistic and ``np.quantile`` for the quantiles;
- ours: ``compute_step_partials(...)["ppo"].finalize()``, numpy arrays and CPU torch tensors;
- torch kernel: the device kernel (``stats_torch``) run on CPU tensors, for reference.

Usage: python benchmarks/bench_stats.py [--tokens 16777216] [--width 4096] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ratiowatch.stats import QUANTILES, compute_step_partials
from ratiowatch.stats_torch import reduce_torch

CLIP = 0.2


def make_step(tokens: int, width: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    width = min(width, tokens)
    shape = (tokens // width, width)
    logp_old = -rng.exponential(1.0, shape).astype(np.float32)
    logp = logp_old + (rng.standard_t(3, shape) * 0.05).astype(np.float32)
    mask = rng.random(shape) < 0.8
    return {"logp": logp, "logp_old": logp_old, "mask": mask}


def naive(logp: np.ndarray, logp_old: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    diff = logp - logp_old
    x = diff[mask]
    r = np.exp(x)
    n = x.size
    rows = np.where(mask, diff, 0).sum(axis=1)
    return {
        "mean": r.mean(),
        "std": r.std(),
        "min": r.min(),
        "max": r.max(),
        "quantiles": np.quantile(r, QUANTILES),
        "ess": r.sum() ** 2 / (n * (r * r).sum()),
        "clip_low": (r < 1 - CLIP).mean(),
        "clip_high": (r > 1 + CLIP).mean(),
        "kl_k1": (-x).mean(),
        "kl_k2": (x * x / 2).mean(),
        "kl_k3": (np.expm1(x) - x).mean(),
        "logratio_mean": x.mean(),
        "logratio_std": x.std(),
        "seq": np.quantile(rows, [0.5, 0.99]),
    }


def cases(step: dict[str, Any]) -> dict[str, Callable[[], object]]:
    import torch

    logp, logp_old, mask = step["logp"], step["logp_old"], step["mask"]
    tensors = {k: torch.from_numpy(v) for k, v in step.items()}
    low, high = np.log1p(-CLIP), np.log1p(CLIP)
    return {
        "floor": lambda: logp.sum() + logp_old.sum() + np.count_nonzero(mask),
        "naive numpy": lambda: naive(logp, logp_old, mask),
        "ours numpy": lambda: compute_step_partials(**step)["ppo"].finalize(),
        "ours torch cpu": lambda: compute_step_partials(**tensors)["ppo"].finalize(),
        "torch kernel cpu": lambda: reduce_torch(
            tensors["logp"], tensors["logp_old"], tensors["mask"], None, low, high
        ),
    }


def measure(
    functions: dict[str, Callable[[], object]], rounds: int, calls: int = 1
) -> dict[str, list[float]]:
    """Per-call times; each round runs every case ``calls`` times in a row, cases alternating."""
    timings: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()  # warm-up: imports, caches, first-touch page faults
    for _ in range(rounds):
        for name, function in functions.items():
            for _ in range(calls):
                start = time.perf_counter()
                function()
                timings[name].append(time.perf_counter() - start)
    return timings


def report(title: str, timings: dict[str, list[float]], unit: str, scale: float) -> None:
    medians = {name: statistics.median(values) for name, values in timings.items()}
    floor, ours = medians["floor"], medians["ours numpy"]
    print(f"\n{title}")
    print(f"  {'case':<18}{'median ' + unit:>14}{'min ' + unit:>12}{'x floor':>10}")
    for name, values in timings.items():
        print(
            f"  {name:<18}{medians[name] * scale:>14.1f}{min(values) * scale:>12.1f}"
            f"{medians[name] / floor:>10.1f}"
        )
    print(f"  ours/floor = {ours / floor:.1f}x   naive/ours = {medians['naive numpy'] / ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16 * 2**20)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    step = make_step(args.tokens, args.width)
    report(
        f"{args.tokens} tokens, float32 [{step['logp'].shape[0]}, {step['logp'].shape[1]}], "
        "80% masked in",
        measure(cases(step), args.repeats),
        "ms",
        1e3,
    )
    small = make_step(4096, 512, seed=1)
    report(
        "4096 tokens, float32 [8, 512], 80% masked in",
        measure(cases(small), args.repeats, calls=300),
        "us",
        1e6,
    )


if __name__ == "__main__":
    main()
