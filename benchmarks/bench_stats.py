"""Cost of one step's ratio statistics, against the cost of merely reading the inputs.

Cases, measured side by side (round-robin, so machine noise hits them alike):
- floor: ``logp.sum() + logp_old.sum() + np.count_nonzero(mask)``, the least any statistic costs;
- naive: what a trainer would write inline: ``x = (logp - logp_old)[mask]; r = np.exp(x)``, one
  numpy pass per statistic and ``np.quantile`` for the quantiles;
- numpy / numba: ``compute_step_partials(...)``, what ``run.log`` computes on the caller's thread
  (validation, the kernel, the k-hat tail; ``finalize`` runs on the sender thread), with the host
  kernel forced to ``reduce_numpy_tail`` or ``reduce_numba_tail`` (1 thread, or the default: numba's
  threads, and one band of rows per core for numpy);
  ``+finalize`` adds the sender thread's part; ``kernel`` rows time the kernel alone;
- torch kernel cpu: the device kernel (``stats_torch``) on CPU tensors, for reference.

The small step runs everything on one thread (numba and torch set to 1 thread). OpenBLAS is
limited to one thread unless OPENBLAS_NUM_THREADS is set.

Usage: python benchmarks/bench_stats.py [--tokens 16777216] [--width 4096] [--repeats 7]
"""

from __future__ import annotations

import os

# OpenBLAS's threads spin for milliseconds after a numpy dot, on the cores the next case needs:
# on a small machine that made whichever case followed the numpy kernel look twice as slow.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ratiowatch import stats_numpy
from ratiowatch.stats import QUANTILES, compute_step_partials
from ratiowatch.stats_torch import reduce_torch

CLIP = 0.2
Case = Callable[[], object]
Setup = Callable[[], None]
KERNELS = (stats_numpy.reduce_numpy, stats_numpy.reduce_cpu)  # as imported, before any setup


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


def use_kernel(reducer: Any, threads: int) -> Callable[[], None]:
    """Setup forcing the host kernel ``compute_step_partials`` uses, and the thread count of
    numba and of the numpy kernel's row bands.

    ``stats`` imports ``reduce_cpu`` from ``stats_numpy`` on each call, so rebinding it there is
    enough (``reducer`` returns the k-hat tail too); ``main`` restores it at the end.
    """

    def setup() -> None:
        import numba

        stats_numpy.reduce_cpu = reducer
        numba.set_num_threads(threads)
        stats_numpy._POOL.threads = threads

    return setup


def cases(step: dict[str, Any], small: bool) -> dict[str, tuple[Setup, Case]]:
    """name -> (setup run before each batch of timed calls, the timed call)."""
    import numba
    import torch

    from ratiowatch.stats_numba import reduce_numba, reduce_numba_tail

    logp, logp_old, mask = step["logp"], step["logp_old"], step["mask"]
    tensors = {k: torch.from_numpy(v) for k, v in step.items()}
    low, high = np.log1p(-CLIP), np.log1p(CLIP)
    threads = numba.config.NUMBA_NUM_THREADS
    numpy_kernel, numpy_n, numba_1, numba_n = (
        use_kernel(stats_numpy.reduce_numpy_tail, 1),
        use_kernel(stats_numpy.reduce_numpy_tail, threads),
        use_kernel(reduce_numba_tail, 1),
        use_kernel(reduce_numba_tail, threads),
    )
    table: dict[str, tuple[Setup, Case]] = {
        "floor": (numpy_kernel, lambda: logp.sum() + logp_old.sum() + np.count_nonzero(mask)),
        "naive numpy": (numpy_kernel, lambda: naive(logp, logp_old, mask)),
        "numpy 1 thread": (numpy_kernel, lambda: compute_step_partials(**step)),
        f"numpy {threads} threads": (numpy_n, lambda: compute_step_partials(**step)),
        "numba 1 thread": (numba_1, lambda: compute_step_partials(**step)),
        f"numba {threads} threads": (numba_n, lambda: compute_step_partials(**step)),
        "numba +finalize": (numba_n, lambda: compute_step_partials(**step)["ppo"].finalize()),
        "numpy kernel": (
            numpy_kernel,
            lambda: KERNELS[0](logp, logp_old, mask, None, low, high),
        ),
        "numba kernel": (numba_n, lambda: reduce_numba(logp, logp_old, mask, None, low, high)),
        "torch kernel cpu": (
            numpy_kernel,
            lambda: reduce_torch(
                tensors["logp"], tensors["logp_old"], tensors["mask"], None, low, high
            ),
        ),
    }
    if small:  # one thread throughout
        del table[f"numba {threads} threads"], table[f"numpy {threads} threads"]
        table["numba +finalize"] = (numba_1, table["numba +finalize"][1])
        table["numba kernel"] = (numba_1, table["numba kernel"][1])
    return table


def measure(
    functions: dict[str, tuple[Setup, Case]], rounds: int, calls: int = 1
) -> dict[str, list[float]]:
    """Per-call times; each round runs every case ``calls`` times in a row, cases alternating."""
    timings: dict[str, list[float]] = {name: [] for name in functions}
    for setup, function in functions.values():
        setup()
        function()  # warm-up: imports, JIT cache load, first-touch page faults
    for _ in range(rounds):
        for name, (setup, function) in functions.items():
            setup()
            for _ in range(calls):
                start = time.perf_counter()
                function()
                timings[name].append(time.perf_counter() - start)
    return timings


def report(
    title: str,
    timings: dict[str, list[float]],
    unit: str,
    scale: float,
    naive_case: str = "naive numpy",
) -> None:
    medians = {name: statistics.median(values) for name, values in timings.items()}
    floor, naive_time = medians["floor"], medians[naive_case]
    print(f"\n{title}")
    print(f"  {'case':<20}{'median ' + unit:>12}{'min ' + unit:>10}{'x floor':>9}{'naive/x':>9}")
    for name, values in timings.items():
        print(
            f"  {name:<20}{medians[name] * scale:>12.1f}{min(values) * scale:>10.1f}"
            f"{medians[name] / floor:>9.1f}{naive_time / medians[name]:>9.1f}"
        )


def main() -> None:
    import numba
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16 * 2**20)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    step = make_step(args.tokens, args.width)
    shape = step["logp"].shape
    report(
        f"{args.tokens} tokens, float32 [{shape[0]}, {shape[1]}], 80% masked in",
        measure(cases(step, small=False), args.repeats),
        "ms",
        1e3,
    )
    torch.set_num_threads(1)
    small = make_step(4096, 512, seed=1)
    report(
        "4096 tokens, float32 [8, 512], 80% masked in, one thread",
        measure(cases(small, small=True), args.repeats, calls=300),
        "us",
        1e6,
    )
    stats_numpy.reduce_cpu = KERNELS[1]
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


if __name__ == "__main__":
    main()
