"""A durable, ordered, per-run on-disk spool of step records.

Layout under ``<home>/spool/<run_id>/``: ``run.json`` (what the server needs to create the run),
``seg-<n>.jsonl`` segments appended in order, and ``cursor`` (segment and byte offset of the first
record not yet acknowledged by the server). Records are flushed and fsynced before the sender
drops its in-memory copy, so a killed trainer loses nothing that reached the spool; a torn last
line from a crash mid-write is cut when the spool is next opened.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ratiowatch.records import RunInfo, StepRecord

SEGMENT_BYTES = 8 * 1024 * 1024
DEFAULT_CAP_BYTES = 2 * 1024 * 1024 * 1024


class SpoolFull(Exception):
    """The spool reached its size cap; the caller counts the records it could not keep."""


class Spool:
    """Append at the tail, read and acknowledge at the head; thread-safe."""

    def __init__(self, directory: Path, *, cap_bytes: int = DEFAULT_CAP_BYTES) -> None:
        self.directory = directory
        self.cap_bytes = cap_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._segment, self._offset = self._load_cursor()
        self._drop_torn_tail()
        # Kept rather than summed over every segment on each append (appends come every slice).
        self._bytes = self._size_bytes()

    @classmethod
    def for_run(cls, root: Path, info: RunInfo, url: str) -> Spool:
        spool = cls(root / info.run_id)
        meta = {"run_id": info.run_id, "url": url, "run": info.to_json()}
        _atomic_write(spool.directory / "run.json", json.dumps(meta).encode())
        return spool

    def run_info(self) -> tuple[RunInfo, str]:
        """The run this spool belongs to, and the server URL it was logged against."""
        meta = json.loads((self.directory / "run.json").read_text())
        return RunInfo.from_json(meta["run_id"], meta["run"]), str(meta["url"])

    def append(self, records: Sequence[StepRecord]) -> None:
        """Durably append ``records`` (raises SpoolFull past the cap, OSError if unwritable)."""
        self.append_encoded([record.encode() for record in records])

    def append_encoded(self, encoded: Sequence[bytes]) -> None:
        """``append``, for records already encoded by :meth:`StepRecord.encode`."""
        if not encoded:
            return
        data = b"".join(line + b"\n" for line in encoded)
        with self._lock:
            if self._bytes + len(data) > self.cap_bytes:
                raise SpoolFull(f"spool {self.directory} is at its cap of {self.cap_bytes} bytes")
            segments = self._segments()
            tail = segments[-1] if segments else self._segment_path(0)
            if tail.exists() and tail.stat().st_size + len(data) > SEGMENT_BYTES:
                tail = self._segment_path(_segment_number(tail) + 1)
            with open(tail, "ab", buffering=0) as handle:  # unbuffered: no write left for close
                start = handle.tell()
                try:
                    unwritten = memoryview(data)
                    while unwritten:  # a full disk may take part of it before refusing the rest
                        unwritten = unwritten[handle.write(unwritten) :]
                    os.fsync(handle.fileno())
                except OSError:
                    # A partial write (disk full) would fuse with the next record into one bad
                    # line; cut it, so that every line stays one whole record.
                    handle.truncate(start)
                    raise
            self._bytes += len(data)

    def pending(self) -> bool:
        with self._lock:
            return self._pending_locked()

    def read(self, max_records: int) -> tuple[list[StepRecord], tuple[int, int]]:
        """Up to ``max_records`` from the head, and the cursor to ``ack`` once they are stored."""
        encoded, cursor = self.read_encoded(max_records)
        records = []
        for line in encoded:
            try:
                records.append(StepRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
        return records, cursor

    def read_encoded(self, max_records: int) -> tuple[list[bytes], tuple[int, int]]:
        """``read``, as the encoded lines themselves: what a request body is made of."""
        with self._lock:
            for path in self._segments():
                number = _segment_number(path)
                if number < self._segment:
                    continue
                start = self._offset if number == self._segment else 0
                lines, end = _read_lines(path, start, max_records)
                if lines:
                    return lines, (number, end)
            return [], (self._segment, self._offset)

    def ack(self, cursor: tuple[int, int]) -> None:
        """Everything before ``cursor`` is stored server-side: drop fully sent segments."""
        with self._lock:
            self._segment, self._offset = cursor
            segments = self._segments()
            for path in segments[:-1]:
                if _segment_number(path) < self._segment or (
                    _segment_number(path) == self._segment and self._offset >= path.stat().st_size
                ):
                    path.unlink()
            if not self._pending_locked():
                for path in self._segments():
                    path.unlink()
                self._segment, self._offset = 0, 0
            self._bytes = self._size_bytes()
            _atomic_write(self.directory / "cursor", f"{self._segment} {self._offset}".encode())

    def pending_records(self) -> int:
        """How many records wait in the spool (reads the files: for summaries, not hot paths)."""
        with self._lock:
            count = 0
            for path in self._segments():
                start = self._offset if _segment_number(path) == self._segment else 0
                if _segment_number(path) >= self._segment:
                    with open(path, "rb") as handle:
                        handle.seek(start)
                        count += sum(1 for line in handle if line.endswith(b"\n"))
            return count

    def _pending_locked(self) -> bool:
        for path in self._segments():
            number = _segment_number(path)
            if number > self._segment or (
                number == self._segment and path.stat().st_size > self._offset
            ):
                return True
        return False

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("seg-*.jsonl"))

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"seg-{number:012d}.jsonl"

    def _size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self._segments())

    def _drop_torn_tail(self) -> None:
        """A crash mid-append leaves a partial last line; cut it so later appends stay parseable."""
        segments = self._segments()
        if not segments:
            return
        data = segments[-1].read_bytes()
        if data and not data.endswith(b"\n"):
            with open(segments[-1], "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def _load_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (self.directory / "cursor").read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            return 0, 0


def spool_directories(root: Path) -> Iterator[Path]:
    """Every run spool under ``root`` (each holds a ``run.json``)."""
    if root.is_dir():
        yield from sorted(path.parent for path in root.glob("*/run.json"))


def _segment_number(path: Path) -> int:
    return int(path.stem.removeprefix("seg-"))


def _read_lines(path: Path, start: int, max_records: int) -> tuple[list[bytes], int]:
    """Up to ``max_records`` complete lines from byte ``start`` (newlines stripped), and the
    offset after the last."""
    lines: list[bytes] = []
    position = start
    with open(path, "rb") as handle:
        handle.seek(start)
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn write from a crash: everything after it is unreadable anyway
            position += len(line)
            lines.append(line[:-1])
            if len(lines) >= max_records:
                break
    return lines, position


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
