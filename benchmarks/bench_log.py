"""Cost of ``run.log(step, **40 scalars)`` beside its floors and other trackers, in one run.

    python benchmarks/bench_log.py [--calls 20000]

Prints median and p99 per call in microseconds, and each as a ratio to a bare
``queue.put_nowait`` of the same record. Rows for wandb (offline), MLflow (asynchronous
``log_metrics``) and torch's ``SummaryWriter`` appear when those packages are importable.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import time
from collections.abc import Callable

import ratiowatch

SCALARS = {f"metric_{i}": float(i) * 0.5 for i in range(40)}


def measure(call: Callable[[int], object], calls: int) -> tuple[float, float]:
    """Median and p99 of one call, in microseconds (after a warm-up)."""
    for step in range(min(1000, calls)):
        call(step)
    durations = []
    clock = time.perf_counter_ns
    for step in range(calls, 2 * calls):
        started = clock()
        call(step)
        durations.append((clock() - started) / 1000)
    durations.sort()
    return statistics.median(durations), durations[int(0.99 * len(durations))]


def bare_queue() -> Callable[[int], object]:
    sink: queue.Queue[object] = queue.Queue()
    return lambda step: sink.put_nowait((step, SCALARS))


def minimal_log() -> Callable[[int], object]:
    """The floor of the call itself: take 40 keyword scalars, merge them, enqueue."""
    sink: queue.Queue[object] = queue.Queue()

    def log(step: int, **scalars: float) -> None:
        sink.put_nowait((step, {f"train/{k}": float(v) for k, v in scalars.items()}))

    return lambda step: log(step, **SCALARS)


def ratiowatch_log(url: str, home: str, mode: str) -> Callable[[int], object]:
    run = ratiowatch.init(project="bench", url=url, home=home, mode=mode)
    return lambda step: run.log(step, **SCALARS)


def competitors(home: str) -> dict[str, Callable[[int], object]]:
    rows: dict[str, Callable[[int], object]] = {}
    try:
        import wandb

        wb = wandb.init(project="bench", mode="offline", dir=home)
        rows["wandb.log (offline)"] = lambda step: wb.log(SCALARS, step=step)
    except ImportError:
        pass
    try:
        import mlflow

        mlflow.set_tracking_uri(f"file://{home}/mlruns")
        mlflow.start_run()
        rows["mlflow.log_metrics (async)"] = lambda step: mlflow.log_metrics(
            SCALARS, step=step, synchronous=False
        )
    except ImportError:
        pass
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=f"{home}/tb")

        def tensorboard(step: int) -> None:
            for key, value in SCALARS.items():
                writer.add_scalar(key, value, step)

        rows["SummaryWriter.add_scalar x40"] = tensorboard
    except ImportError:
        pass
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="ratiowatch-bench-")
    rows = {
        "queue.put_nowait (floor)": bare_queue(),
        "minimal log(**40 scalars)": minimal_log(),
        "ratiowatch offline (spool)": ratiowatch_log(
            "http://127.0.0.1:9", home + "/offline", "offline"
        ),
        "ratiowatch, server unreachable": ratiowatch_log(
            "http://127.0.0.1:9", home + "/down", "online"
        ),
    }
    rows.update(competitors(home))
    results = {name: measure(call, args.calls) for name, call in rows.items()}
    floor_median, _ = results["queue.put_nowait (floor)"]
    print(f"{'call':34} {'median us':>10} {'p99 us':>10} {'x floor (median)':>17}")
    for name, (median, p99) in results.items():
        print(f"{name:34} {median:10.2f} {p99:10.2f} {median / floor_median:17.1f}")


if __name__ == "__main__":
    main()
