"""The public client API: argument errors, modes, micro-batch merging, forks and light imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ratiowatch
from ratiowatch.errors import InvalidArgumentError, InvalidTypeError
from tests.support import LiveServer


def test_public_names_are_pinned() -> None:
    assert ratiowatch.__all__ == [
        "InvalidArgumentError",
        "InvalidTypeError",
        "RatiowatchError",
        "Run",
        "init",
    ]


def test_import_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, ratiowatch; "
        "heavy = {'torch', 'fastapi', 'sqlalchemy', 'dash', 'plotly', 'numba', "
        "'ratiowatch_server'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"project": ""}, "project"),
        ({"project": "p", "mode": "sometimes"}, "mode"),
        ({"project": "p", "url": "ftp://x"}, "url"),
        ({"project": "p", "clip": (1.5, 0.2)}, "clip"),
        ({"project": "p", "clip": "wide"}, "clip"),
        ({"project": "p", "run_id": "has space"}, "run_id"),
    ],
)
def test_init_rejects_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ratiowatch.init(**kwargs)  # type: ignore[arg-type]


def test_log_rejects_invalid_arguments_before_queueing(tmp_path: Path) -> None:
    run = ratiowatch.init(project="p", mode="offline", home=tmp_path)
    logp = np.zeros((4, 8), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match=r"mask has shape \(4, 7\)"):
        run.log(0, logp=logp, logp_old=logp, mask=np.ones((4, 7), dtype=bool))
    with pytest.raises(InvalidTypeError, match="logp_old"):
        run.log(0, logp=logp, logp_old=np.zeros((4, 8), dtype=np.int64))
    with pytest.raises(InvalidArgumentError, match="step"):
        run.log(-1, loss=1.0)
    with pytest.raises(InvalidTypeError, match="loss"):
        run.log(0, loss="low")
    run.close()
    assert run._sender is not None and run._sender.pending() == 0


def test_micro_batches_of_one_step_merge_into_one_record(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logp, logp_old = rng.normal(-2, 0.1, (2, 6, 10)), rng.normal(-2, 0.1, (2, 6, 10))
    mask = rng.random((2, 6, 10)) > 0.2
    run = ratiowatch.init(project="p", mode="offline", home=tmp_path)
    for half in range(2):
        run.log(
            7,
            logp=logp[half],
            logp_old=logp_old[half],
            mask=mask[half],
            grad_norm=float(half),
            loss=half,
        )
    run.close()
    assert run._sender is not None
    (record,), _ = run._sender.spool.read(10)
    x = (logp - logp_old)[mask]
    assert record.step == 7 and record.metrics["ppo/count"] == x.size
    assert record.metrics["ppo/kl_k1"] == pytest.approx(float(np.mean(-x)), rel=1e-9)
    assert record.metrics["grad/norm"] == 1.0 and record.metrics["train/loss"] == 0.5


def test_scalars_of_every_numeric_kind_arrive_as_floats(tmp_path: Path) -> None:
    import torch

    run = ratiowatch.init(project="p", mode="offline", home=tmp_path)
    run.log(step=3, lr=1e-4, epoch=2, skipped=True, entropy=np.float32(0.5), kl=torch.tensor(0.25))
    run.log(4, loss=float("nan"), grad_norm=np.float64(2.0))
    run.close()
    assert run._sender is not None
    first, second = run._sender.spool.read(10)[0]
    assert first.metrics == {
        "train/lr": 1e-4,
        "train/epoch": 2.0,
        "train/skipped": 1.0,
        "train/entropy": 0.5,
        "train/kl": 0.25,
    }
    assert all(type(value) is float for value in first.metrics.values())
    # NaN is recorded (as null: JSON has no NaN), not refused
    assert second.metrics == {"grad/norm": 2.0, "train/loss": None}


def test_a_full_queue_spills_to_the_spool_in_order(tmp_path: Path) -> None:
    run = ratiowatch.init(project="p", mode="offline", home=tmp_path)
    assert run._sender is not None
    run._sender.queue_size = 3  # the sender thread takes at most one batch per linger
    for step in range(50):
        run.log(step, loss=float(step))
    run.close()
    records, _ = run._sender.spool.read(100)
    assert [record.step for record in records] == list(range(50))


def test_a_scalar_that_cannot_become_a_float_costs_its_step_counted(tmp_path: Path) -> None:
    from ratiowatch import guard

    guard.strict(False)  # this test is about what production does with the failure

    class AddsToAFloat:  # passes log's one-sum check, then fails float() in the sender
        def __radd__(self, other: object) -> float:
            return 0.0

    run = ratiowatch.init(project="p", mode="offline", home=tmp_path)
    run.log(0, loss=1.0)
    run.log(1, loss=AddsToAFloat())
    run.log(2, loss=2.0)
    run.close()
    assert run._sender is not None
    records, _ = run._sender.spool.read(10)
    assert [record.step for record in records] == [0, 2]
    assert run.guard.lost["unencodable"] == 1


def test_scalars_that_break_the_fast_check_are_named(tmp_path: Path) -> None:
    run = ratiowatch.init(project="p", mode="offline", home=tmp_path)
    with pytest.raises(InvalidTypeError, match="first"):  # sum() raises ValueError on these
        run.log(0, first=np.zeros(2), second=np.zeros(3))
    run.close()


def test_disabled_mode_does_nothing(tmp_path: Path) -> None:
    run = ratiowatch.init(project="p", mode="disabled", home=tmp_path)
    run.log(0, logp=np.zeros(3), logp_old=np.zeros(3), loss=1.0)
    run.close()
    assert not (tmp_path / "spool").exists()


def test_alert_callback_errors_are_contained(live_server: LiveServer, tmp_path: Path) -> None:
    from ratiowatch import guard

    guard.strict(False)  # this test is about what production does with a failing callback
    run = ratiowatch.init(project="p", url=live_server.url, home=tmp_path)
    calls: list[int] = []

    def broken(alert: dict[str, object]) -> None:
        calls.append(int(alert["step"]))  # type: ignore[call-overload]
        raise RuntimeError("user bug")

    run.on_alert(broken)
    for step in range(3):
        run.log(step, grad_norm=float("nan"))
    run.close()
    assert calls == [0]
    assert run.guard.errors["on_alert callback"] == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_neither_sends_nor_resends(tmp_path: Path) -> None:
    run = ratiowatch.init(project="p", mode="offline", home=tmp_path)
    run.log(0, loss=1.0)
    pid = os.fork()
    if pid == 0:  # the child: a DataLoader worker that happens to call log
        run.log(1, loss=2.0)
        run.close()
        os._exit(0)
    os.waitpid(pid, 0)
    run.log(2, loss=3.0)
    run.close()
    assert run._sender is not None
    records, _ = run._sender.spool.read(10)
    assert [r.step for r in records] == [0, 2]
