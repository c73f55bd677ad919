"""Client settings, resolved once in ``init()``: arguments, then ``RATIOWATCH_*``, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ratiowatch.errors import InvalidArgumentError

Mode = Literal["online", "offline", "disabled"]
MODES: tuple[Mode, ...] = ("online", "offline", "disabled")
DEFAULT_URL = "http://127.0.0.1:8765"


@dataclass(frozen=True)
class ClientSettings:
    url: str
    mode: Mode
    home: Path
    token: str | None

    @property
    def spool_root(self) -> Path:
        return self.home / "spool"


def resolve(
    *,
    url: str | None,
    mode: str | None,
    token: str | None,
    home: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Arguments win over the environment, the environment over defaults."""
    env = os.environ if environ is None else environ
    resolved_mode = mode or env.get("RATIOWATCH_MODE") or "online"
    if resolved_mode not in MODES:
        raise InvalidArgumentError(f"mode is {resolved_mode!r}; expected one of {', '.join(MODES)}")
    resolved_url = (url or env.get("RATIOWATCH_URL") or DEFAULT_URL).rstrip("/")
    if not resolved_url.startswith(("http://", "https://")):
        raise InvalidArgumentError(f"url is {resolved_url!r}; expected an http:// or https:// URL")
    resolved_home = Path(home or env.get("RATIOWATCH_HOME") or Path.home() / ".ratiowatch")
    return ClientSettings(
        url=resolved_url,
        mode=resolved_mode,
        home=resolved_home,
        token=token or env.get("RATIOWATCH_TOKEN") or None,
    )
