"""Cost of ``run.log(step, **40 scalars)`` beside its floors and other trackers, in one run.

    python benchmarks/bench_log.py [--calls 20000] [--pace 0] [--no-settle]

Prints median, p99 and max per call in microseconds, and the median as a ratio to a bare
``queue.put_nowait`` of a ready record and to the minimal Python ``log(step, **scalars)`` that
merges the scalars into a record and enqueues it; one row logs a whole 4,096-token PPO step
instead. Rows for wandb (offline), MLflow (asynchronous ``log_metrics``) and torch's
``SummaryWriter`` appear when those packages are importable (see ``competitors``); the other rows
are measured round-robin (see ``round_robin``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator

import numpy as np

import ratiowatch

SCALARS = {f"metric_{i}": float(i) * 0.5 for i in range(40)}


Call = Callable[[int], object]


def timed(call: Call, steps: range, pace: float) -> list[float]:
    """Microseconds per call, one per step.

    ``pace`` seconds pass between calls with the GIL released, as they do while a trainer waits
    on its accelerator; 0 makes a tight loop that fights the sender thread for the GIL.
    """
    durations = []
    clock = time.perf_counter_ns
    for step in steps:
        started = clock()
        call(step)
        durations.append((clock() - started) / 1000)
        if pace:
            time.sleep(pace)
    return durations


def round_robin(
    rows: dict[str, Call], calls: int, pace: float, *, settle: bool, rounds: int = 10
) -> Results:
    """Each row ``calls`` times, in ``rounds`` alternating blocks so that the machine's drift
    hits every row alike; ``SETTLE`` runs after each block unless ``settle`` is False."""
    durations: dict[str, list[float]] = {name: [] for name in rows}
    for call in rows.values():
        timed(call, range(min(1000, calls)), pace)  # warm-up
    block = max(1, calls // rounds)
    for round_ in range(rounds):
        steps = range(calls + round_ * block, calls + (round_ + 1) * block)
        for name, call in rows.items():
            durations[name] += timed(call, steps, pace)
            for settle_row in SETTLE if settle else ():
                settle_row()
    return {name: summary(values) for name, values in durations.items()}


def summary(durations: list[float]) -> tuple[float, float, float]:
    """(median, p99, max) in microseconds."""
    durations = sorted(durations)
    return statistics.median(durations), durations[int(0.99 * len(durations))], durations[-1]


def bare_queue() -> Call:
    sink: queue.Queue[object] = queue.Queue()
    SETTLE.append(sink.queue.clear)
    return lambda step: sink.put_nowait((step, SCALARS))


def minimal_log() -> Call:
    """The floor of the call itself: take 40 keyword scalars, merge them into a record, enqueue."""
    sink: queue.Queue[object] = queue.Queue()
    SETTLE.append(sink.queue.clear)

    def log(step: int, **scalars: float) -> None:
        record: dict[str, float] = {"step": step}
        record.update(scalars)
        sink.put_nowait(record)

    return lambda step: log(step, **SCALARS)


# Run (untimed) after each block: what each row's consumer would have done meanwhile, so that
# no row's backlog (a sender thread's work, or records piling up for the garbage collector to
# traverse) spills into the next row's timings.
SETTLE: list[Callable[[], object]] = []
Results = dict[str, tuple[float, float, float]]


def ratiowatch_log(url: str, home: str, mode: str) -> Call:
    run = ratiowatch.init(project="bench", url=url, home=home, mode=mode)
    SETTLE.append(lambda: run.flush(timeout=120))
    return lambda step: run.log(step, **SCALARS)


def ratiowatch_log_arrays(home: str) -> Call:
    """A whole ``log`` of one 4,096-token step: validation, statistics, sketch, enqueue."""
    rng = np.random.default_rng(0)
    logp_old = rng.normal(-1.0, 0.5, (8, 512)).astype(np.float32)
    logp = (logp_old + rng.normal(0.0, 0.05, (8, 512))).astype(np.float32)
    mask = rng.random((8, 512)) < 0.8
    run = ratiowatch.init(project="bench", home=home, mode="offline")
    SETTLE.append(lambda: run.flush(timeout=120))
    return lambda step: run.log(step, logp=logp, logp_old=logp_old, mask=mask, grad_norm=1.0)


def live_server(home: str) -> tuple[str, subprocess.Popen[bytes]] | None:
    """A real ``ratiowatch serve`` in its own process (so it takes no GIL from the trainer)."""
    if importlib.util.find_spec("ratiowatch_server") is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ratiowatch.cli",
            "serve",
            "--port",
            str(port),
            "--db",
            f"sqlite:///{home}/server.db",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return url, server
        except OSError:
            time.sleep(0.1)
    server.kill()
    return None


def competitors(home: str) -> Iterator[tuple[str, Call, Callable[[], None]]]:
    """(row, call, teardown) per tracker installed, each set up only when its turn comes: W&B
    runs a service process and MLflow a logging thread, which would slow every other row."""
    try:
        import wandb

        wb = wandb.init(project="bench", mode="offline", dir=home)
        yield "W&B log (offline mode)", lambda step: wb.log(SCALARS, step=step), wb.finish
    except ImportError:
        pass
    try:
        import mlflow

        # mlflow-skinny has only the file store, which newer MLflow gates behind this flag.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(f"file://{home}/mlruns")
        mlflow.start_run()
        yield (
            "mlflow.log_metrics (async)",
            lambda step: mlflow.log_metrics(SCALARS, step=step, synchronous=False),
            mlflow.end_run,
        )
    except ImportError:
        pass
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=f"{home}/tb")

        def tensorboard(step: int) -> None:
            for key, value in SCALARS.items():
                writer.add_scalar(key, value, step)

        yield "SummaryWriter.add_scalar x40", tensorboard, writer.close
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument(
        "--pace", type=float, default=0.0, help="seconds of GIL-free 'training' between calls"
    )
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="never flush between blocks: in a tight loop the sender falls behind, the queue "
        "fills, and calls that find it full move records to the spool themselves",
    )
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
    rows["ratiowatch, 4096-token step"] = ratiowatch_log_arrays(home + "/arrays")
    server = live_server(home)
    if server is not None:
        rows["ratiowatch, server up"] = ratiowatch_log(server[0], home + "/up", "online")
    try:
        results = round_robin(rows, args.calls, args.pace, settle=not args.no_settle)
    finally:
        if server is not None:
            server[1].terminate()
    for name, call, teardown in competitors(home):
        timed(call, range(min(1000, args.calls)), args.pace)  # warm-up
        results[name] = summary(timed(call, range(args.calls, 2 * args.calls), args.pace))
        teardown()
    floor_median = results["queue.put_nowait (floor)"][0]
    minimal_median = results["minimal log(**40 scalars)"][0]
    print(
        f"{'call':34} {'median us':>10} {'p99 us':>10} {'max us':>10}"
        f" {'x put_nowait':>13} {'x minimal':>10}"
    )
    for name, (median, p99, worst) in results.items():
        print(
            f"{name:34} {median:10.2f} {p99:10.2f} {worst:10.0f} {median / floor_median:13.1f}"
            f" {median / minimal_median:10.2f}"
        )


if __name__ == "__main__":
    main()
