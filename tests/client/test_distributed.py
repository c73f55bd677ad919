"""Merging statistics across torch.distributed ranks: real gloo process groups on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import statistics
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import ratiowatch
from ratiowatch import guard
from ratiowatch.distributed import LOST_AFTER_GROUP, RankMerger
from ratiowatch.guard import Guard
from ratiowatch.records import StepRecord
from ratiowatch.spool import Spool
from ratiowatch.stats import FamilyPartial, compute_step_partials
from ratiowatch.step import ClosedStep

WIDTH = 24
RUN_ID = "dist"


def micro_batches(rank: int, step: int) -> list[dict[str, np.ndarray]]:
    """Rank r's micro-batches of a step: different rows, scales and sizes on every rank.

    Step 0: rank 1 has every token masked out. Rank 0's ratios sit near 1, rank 1's near 0.37 and
    rank 2's near 7, with more tokens on higher ranks, so the mean of per-rank medians is far from
    the median of the union. Step 1: ranks other than 0 also give logp_behavior, so "mismatch"
    exists on some ranks only.
    """
    out = []
    for micro in range(2):
        rng = np.random.default_rng([7, rank, step, micro])
        rows = 2 + rank + micro
        logp_old = -rng.exponential(1.0, (rows, WIDTH))
        scale, shift = [(0.05, 0.0), (0.3, -1.0), (1.0, 2.0)][rank % 3]
        logp = logp_old + shift + rng.standard_t(4, (rows, WIDTH)) * scale
        mask = rng.random((rows, WIDTH)) < 0.8
        if step == 0 and rank == 1:
            mask[:] = False
        batch = {"logp": logp, "logp_old": logp_old, "mask": mask}
        batch["advantages"] = rng.standard_normal(rows)
        if step == 1 and rank > 0:
            batch["logp_behavior"] = logp_old + rng.standard_normal((rows, WIDTH)) * 0.2
        out.append(batch)
    return out


def _rank_main(rank: int, world: int, port: int, root: str) -> None:
    """One trainer process: steps 0-1 with ratios, step 2 scalars only, step 3 left open."""
    guard.strict(True)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=30),
    )
    run = ratiowatch.init(
        project="p", mode="offline", home=Path(root) / f"rank{rank}", run_id=RUN_ID
    )
    for step in range(2):
        for batch in micro_batches(rank, step):
            run.log(step, **batch, grad_norm=10.0 + rank, loss=float(rank))
    run.log(2, loss=float(rank) * 2)
    flushed = run.flush()
    run.log(3, logp=np.zeros(3), logp_old=np.zeros(3))  # still open when the group goes away
    dist.destroy_process_group()
    run.close()
    result = {"flushed": flushed, "lost": dict(run.guard.lost)}
    (Path(root) / f"result{rank}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _concatenated(step: int, ranks: range, keys: tuple[str, ...]) -> dict[str, Any]:
    batches = [b for rank in ranks for b in micro_batches(rank, step)]
    return {key: np.concatenate([b[key] for b in batches]) for key in (*keys, "mask")}


def _assert_record_matches(record: StepRecord, family: str, whole: FamilyPartial) -> None:
    expected = whole.finalize()
    assert record.sketches[family] == whole.sketch.to_wire()
    for stat, want in expected.items():
        got = record.metrics[f"{family}/{stat}"]
        if want is None or stat in ("count", "nonfinite"):
            assert got == want, stat
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), stat


@pytest.mark.parametrize("world", [2, 3])
def test_rank_zero_sends_the_statistics_of_all_ranks_tokens(tmp_path: Path, world: int) -> None:
    mp.spawn(_rank_main, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)

    records, _ = Spool(tmp_path / "rank0" / "spool" / RUN_ID).read(100)
    assert [r.step for r in records] == [0, 1, 2]
    for rank in range(1, world):
        assert not (tmp_path / f"rank{rank}" / "spool").exists()
        assert json.loads((tmp_path / f"result{rank}.json").read_text())["flushed"] is True
    rank0 = json.loads((tmp_path / "result0.json").read_text())
    assert rank0["lost"] == {LOST_AFTER_GROUP: 1}

    step0 = compute_step_partials(
        **_concatenated(0, range(world), ("logp", "logp_old", "advantages"))
    )
    _assert_record_matches(records[0], "ppo", step0["ppo"])

    step1 = compute_step_partials(
        **_concatenated(1, range(world), ("logp", "logp_old", "advantages"))
    )
    mismatch = compute_step_partials(
        **_concatenated(1, range(1, world), ("logp_old", "logp_behavior", "advantages"))
    )
    _assert_record_matches(records[1], "ppo", step1["ppo"])
    _assert_record_matches(records[1], "mismatch", mismatch["mismatch"])
    per_rank = [
        compute_step_partials(**_concatenated(1, range(r, r + 1), ("logp", "logp_old")))["ppo"]
        for r in range(world)
    ]
    mean_of_medians = statistics.mean(p.finalize()["p50"] or 0.0 for p in per_rank)
    merged_median = records[1].metrics["ppo/p50"]
    assert merged_median is not None and abs(merged_median / mean_of_medians - 1) > 0.1
    assert records[1].metrics["grad/norm"] == 10.0  # rank 0's: already global
    assert records[1].metrics["train/loss"] == pytest.approx(statistics.mean(range(world)))
    assert records[2].metrics == {"train/loss": pytest.approx(statistics.mean(range(world)) * 2)}


class _BrokenGroup:
    """A two-rank process group whose collectives fail, as after a peer died."""

    def __init__(self) -> None:
        self.calls = 0

    def get_world_size(self) -> int:
        return 2

    def get_rank(self) -> int:
        return 0

    def all_gather_object(self, out: list[Any], obj: Any) -> None:
        self.calls += 1
        raise RuntimeError("connection reset by peer")


def test_a_failed_collective_stops_merging_on_that_rank() -> None:
    guard.strict(False)  # this test is about what production does with a failing collective
    contained = Guard()
    group = _BrokenGroup()
    merger = RankMerger(contained, dist=group)
    first, second = ClosedStep(0), ClosedStep(1)
    assert merger.merge(first) is first  # rank 0 keeps its own statistics
    assert merger.merge(second) is second
    assert group.calls == 1  # no further collectives from this rank
    assert contained.errors["distributed merge"] == 1
