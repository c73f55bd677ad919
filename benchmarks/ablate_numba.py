"""Where the numba kernel's time goes: the kernel timed with parts of its token loop removed.

Each variant is a copy of the installed ``ratiowatch`` package with source edits in
``stats_numba_block.py``, timed in its own process (numba compiles per source file), the processes
alternating round by round so that the machine's drift hits every variant alike. The variants
compute wrong numbers on purpose: only their times mean anything. A part whose removal saves
little is not what bounds the loop.

``--against DIR`` times the installed kernel against the unedited package in DIR instead, e.g.
another commit's: ``git worktree add /tmp/old COMMIT`` and DIR = /tmp/old/client/ratiowatch.

Usage: python benchmarks/ablate_numba.py [--rounds 3] [--tokens 16777216] [--calls 9]
       [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

Edit = tuple[str, str]  # a text in stats_numba_block.py, and its replacement
NO_EXPM1 = ("        e = expm1(x)\n", "        e = x\n")
# The bin and its count both go: one constant bin would chain every increment on the last.
NO_BIN = ("        slots[j] = _slot(x) if keep else _INVALID_SLOT\n", "")
NO_COUNT = ("            hist[np.uint64(slot - _INVALID_SLOT + way * _WAY_SIZE)] += 1\n", "")
NO_TAIL = ("            if slot >= bar_slot:\n", "            if False:\n")
VARIANTS: dict[str, tuple[Edit, ...]] = {
    "kernel": (),
    "no expm1 (e = x)": (NO_EXPM1,),
    "no sketch counts": (NO_COUNT,),
    "no sketch bins or counts": (NO_BIN, NO_COUNT),
    "no k-hat tail screen": (NO_TAIL,),
    "none of these three": (NO_EXPM1, NO_BIN, NO_COUNT, NO_TAIL),
}


def variant_package(root: Path, edits: tuple[Edit, ...], source: Path | None = None) -> Path:
    """A copy of the package in ``source`` (by default the installed one) under ``root``, with
    each edit applied once."""
    import ratiowatch

    source = source or Path(ratiowatch.__file__).parent
    target = root / "ratiowatch"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    kernel = target / "stats_numba_block.py"
    text = kernel.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            raise SystemExit(f"the edit no longer applies to stats_numba_block.py: {old!r}")
        text = text.replace(old, new)
    kernel.write_text(text)
    return root


def child(root: str, tokens: int, calls: int) -> None:
    """Prints the floor's and the kernel's median time in ms, for the package under ``root``."""
    import numpy as np

    from ratiowatch import stats_numba_block
    from ratiowatch.stats_numba import reduce_numba_tail

    if not Path(stats_numba_block.__file__).is_relative_to(root):  # an installed copy came first
        raise SystemExit(f"imported {stats_numba_block.__file__}, not the variant under {root}")

    rng = np.random.default_rng(0)
    shape = (tokens // 4096, 4096)
    old = -rng.exponential(1.0, shape).astype(np.float32)
    new = old + (rng.standard_t(3, shape) * 0.05).astype(np.float32)
    mask = rng.random(shape) < 0.8
    cases: dict[str, Callable[[], object]] = {
        "floor": lambda: new.sum() + old.sum() + np.count_nonzero(mask),
        "kernel": lambda: reduce_numba_tail(new, old, mask, None, -0.22, 0.18),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for function in cases.values():
        function()  # compiles or loads the kernel
    for _ in range(calls):
        for name, function in cases.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    print(*(f"{statistics.median(values) * 1e3:.3f}" for values in times.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16 * 2**20)
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--against", type=Path, help="a ratiowatch package directory to compare")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a variant's root: time it
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tokens, args.calls)
        return
    sources: dict[str, tuple[tuple[Edit, ...], Path | None]]
    if args.against:
        sources = {"kernel": ((), None), str(args.against): ((), args.against)}
    else:
        sources = {name: (edits, None) for name, edits in VARIANTS.items()}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory() as scratch:
        paths = {
            name: variant_package(Path(scratch) / str(i), edits, source)
            for i, (name, (edits, source)) in enumerate(sources.items())
        }
        command = [
            sys.executable,
            __file__,
            "--tokens",
            str(args.tokens),
            "--calls",
            str(args.calls),
        ]
        for _ in range(args.rounds):
            for name, path in paths.items():
                env = {**os.environ, "PYTHONPATH": str(path), "NUMBA_CACHE_DIR": str(path)}
                out = subprocess.run(
                    [*command, "--child", str(path)], env=env, capture_output=True, text=True
                )
                if out.returncode:
                    raise SystemExit(f"{name}: {out.stderr}")
                floor, kernel = map(float, out.stdout.split())
                results[name].append((floor, kernel))
    print(f"{args.tokens} float32 tokens, default threads; per process: median of {args.calls}")
    print(f"  {'variant':<26}{'kernel ms, each process':>30}{'x floor (median)':>18}")
    for name, pairs in results.items():
        kernels = " ".join(f"{kernel:.1f}" for _, kernel in pairs)
        ratio = statistics.median(kernel / floor for floor, kernel in pairs)
        print(f"  {name:<26}{kernels:>30}{ratio:>18.1f}")


if __name__ == "__main__":
    main()
