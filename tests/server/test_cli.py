"""The server-side commands, through the client's console script as a user runs them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def _ratiowatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ratiowatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    database = tmp_path / "rw.db"
    done = _ratiowatch("db", "upgrade", "--db", f"sqlite:///{database}")
    assert done.returncode == 0, done.stderr
    tables = {row[0] for row in sqlite3.connect(database).execute("select name from sqlite_master")}
    assert {"runs", "steps", "metric_values", "alerts", "detector_states"} <= tables
    assert _ratiowatch("db", "upgrade", "--db", f"sqlite:///{database}").returncode == 0


def test_serve_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    done = _ratiowatch("serve", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert done.returncode == 2
    assert "--insecure" in done.stderr
