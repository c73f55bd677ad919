"""Where the Triton kernel's time goes: ``reduce_triton`` timed with parts of it removed.

Each variant is a copy of ``stats_triton.py`` with source edits, loaded as its own module (Triton
compiles per function), timed round-robin with the others on the same CUDA tensors. The variants
compute wrong numbers on purpose: only their times mean anything.

Usage: python benchmarks/ablate_triton.py [--tokens 16777216] [--rounds 7]   (needs a CUDA GPU)
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

from bench_stats import CLIP, make_step
from ratiowatch import stats_triton

Edit = tuple[str, str]  # a text in stats_triton.py, and its replacement
VARIANTS: dict[str, tuple[Edit, ...]] = {
    "kernel": (),
    "no bin counts": (
        ('            tl.atomic_add(hist_ptr + slot, 1, mask=valid, sem="relaxed")\n', ""),
    ),
    "one copy of the bins": (("_COPIES = tl.constexpr(128)", "_COPIES = tl.constexpr(1)"),),
    "32 copies": (("_COPIES = tl.constexpr(128)", "_COPIES = tl.constexpr(32)"),),
    "512 copies": (("_COPIES = tl.constexpr(128)", "_COPIES = tl.constexpr(512)"),),
    "no expm1 (e = x)": (("            e = _expm1(x)\n", "            e = x\n"),),
    "no exp (r = x)": (
        ("tl.where(valid, tl.exp(x - shift), 0.0)", "tl.where(valid, x - shift, 0.0)"),
    ),
    "no k-hat tail": (("    tail = _tail(operands, bins, flags)\n", "    tail = np.zeros(0)\n"),),
}


def variant(directory: Path, edits: tuple[Edit, ...]) -> ModuleType:
    text = Path(stats_triton.__file__).read_text()
    for old, new in edits:
        if text.count(old) != 1:
            raise SystemExit(f"the edit no longer applies to stats_triton.py: {old!r}")
        text = text.replace(old, new)
    path = directory / f"ablation_{len(list(directory.iterdir()))}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16 * 2**20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    step = {k: torch.from_numpy(v).cuda() for k, v in make_step(args.tokens, 4096).items()}
    logp, logp_old, mask = step["logp"], step["logp_old"], step["mask"]
    thresholds = (float(torch.tensor(-CLIP).log1p()), float(torch.tensor(CLIP).log1p()))
    with tempfile.TemporaryDirectory() as directory:
        cases = {"floor": lambda: logp.sum() + logp_old.sum() + mask.count_nonzero()}
        for name, edits in VARIANTS.items():
            reduce = variant(Path(directory), edits).reduce_triton
            cases[name] = lambda reduce=reduce: reduce(logp, logp_old, mask, None, *thresholds)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for case in cases.values():  # compile and warm up
            case()
        torch.cuda.synchronize()
        for _ in range(args.rounds):
            for name, case in cases.items():
                start = time.perf_counter()
                case()
                torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    floor = statistics.median(times["floor"])
    print(f"{args.tokens} tokens, {torch.cuda.get_device_name()}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<24}{median * 1e3:>9.3f} ms{median / floor:>7.1f}x floor")


if __name__ == "__main__":
    main()
