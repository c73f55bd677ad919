"""Uploads spooled records (offline runs, or what a killed trainer left behind)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ratiowatch.spool import Spool, spool_directories
from ratiowatch.transport import HttpTransport, RejectedError, UnknownRunError

BATCH = 500
Progress = Callable[[str, int, int], None]


def sync_path(path: Path, *, url: str | None, token: str | None, progress: Progress) -> int:
    """Upload every spool under ``path`` (a run's spool or a folder of them); steps sent."""
    directories = [path] if (path / "run.json").is_file() else list(spool_directories(path))
    return sum(_sync_one(d, url=url, token=token, progress=progress) for d in directories)


def _sync_one(directory: Path, *, url: str | None, token: str | None, progress: Progress) -> int:
    spool = Spool(directory)
    info, logged_url = spool.run_info()
    transport = HttpTransport(url or logged_url, token=token)
    total = spool.pending_records()
    sent = 0
    transport.put_run(info)
    progress(info.run_id, sent, total)
    while True:
        encoded, cursor = spool.read_encoded(BATCH)
        if not encoded:
            spool.ack(cursor)
            return sent
        try:
            transport.post_steps(info.run_id, encoded, {})
        except UnknownRunError:
            transport.put_run(info)
            transport.post_steps(info.run_id, encoded, {})
        except RejectedError as exc:
            print(f"\nrun {info.run_id}: {len(encoded)} steps rejected: {exc}", file=sys.stderr)
        spool.ack(cursor)
        sent += len(encoded)
        progress(info.run_id, sent, total)


def bar_printer(stream: TextIO = sys.stderr, width: int = 30) -> Progress:
    """A one-line text progress bar per run."""

    def show(run_id: str, done: int, total: int) -> None:
        filled = width if total == 0 else int(width * done / total)
        end = "\n" if done >= total else ""
        stream.write(f"\r{run_id} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
        stream.flush()

    return show
