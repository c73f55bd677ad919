"""The on-disk spool: order, acknowledgement, crash leftovers and the size cap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ratiowatch import spool as spool_module
from ratiowatch.records import StepRecord
from ratiowatch.spool import Spool, SpoolFull


def _records(start: int, stop: int) -> list[StepRecord]:
    return [
        StepRecord(step=s, time=float(s), metrics={"a": float(s), "b": None})
        for s in range(start, stop)
    ]


def test_records_come_back_in_order_and_ack_drops_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_records(0, 5))
    spool.append(_records(5, 8))
    batch, cursor = spool.read(6)
    assert [r.step for r in batch] == list(range(6))
    assert batch[0].metrics == {"a": 0.0, "b": None}
    spool.ack(cursor)
    assert spool.pending_records() == 2
    reopened = Spool(tmp_path)  # a new process picks up at the acknowledged cursor
    batch, cursor = reopened.read(100)
    assert [r.step for r in batch] == [6, 7]
    reopened.ack(cursor)
    assert not reopened.pending() and not list(tmp_path.glob("seg-*"))


def test_segments_roll_over_and_are_deleted_once_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    spool = Spool(tmp_path)
    for start in range(0, 30, 3):
        spool.append(_records(start, start + 3))
    assert len(list(tmp_path.glob("seg-*"))) > 3
    seen: list[int] = []
    while spool.pending():
        batch, cursor = spool.read(4)
        seen += [r.step for r in batch]
        spool.ack(cursor)
    assert seen == list(range(30))


def test_torn_last_line_from_a_crash_is_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_records(0, 2))
    segment = next(tmp_path.glob("seg-*"))
    with open(segment, "ab") as handle:
        handle.write(b'{"step": 2, "ti')
    reopened = Spool(tmp_path)
    reopened.append(_records(3, 4))
    assert [r.step for r in reopened.read(10)[0]] == [0, 1, 3]


def test_cap_refuses_instead_of_filling_the_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, cap_bytes=300)
    spool.append(_records(0, 2))
    with pytest.raises(SpoolFull):
        spool.append(_records(2, 20))


def test_a_partial_write_on_a_full_disk_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Otherwise the torn line would fuse with the next record into one unreadable line."""
    import io

    class FillsUp(io.FileIO):
        """Takes 10 bytes of the first write, then refuses, as a disk that fills up does."""

        def write(self, data: object) -> int:
            if self.tell() > start_size:
                raise OSError(28, "No space left on device")
            return super().write(bytes(memoryview(data))[:10])  # type: ignore[arg-type]

    spool = Spool(tmp_path)
    spool.append(_records(0, 2))
    start_size = sum(path.stat().st_size for path in tmp_path.glob("seg-*"))
    monkeypatch.setattr(
        spool_module, "open", lambda path, mode, buffering: FillsUp(path, mode), raising=False
    )
    with pytest.raises(OSError):
        spool.append(_records(2, 4))
    monkeypatch.undo()
    spool.append(_records(4, 6))
    encoded, _ = spool.read_encoded(10)
    assert [json.loads(line)["step"] for line in encoded] == [0, 1, 4, 5]
