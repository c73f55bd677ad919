"""The ``ratiowatch`` command. ``sync`` runs here (client only); the server commands are forwarded
to ``ratiowatch_server`` and, without the ``[server]`` extra, fail with a message naming it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ratiowatch import settings as client_settings
from ratiowatch.transport import TransportError

SERVER_COMMANDS = ("serve", "demo", "db")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SERVER_COMMANDS:
        try:
            from ratiowatch_server.cli import main as server_main
        except ImportError as exc:
            print(
                f"`ratiowatch {args[0]}` needs the server: "
                f"pip install 'ratiowatch[server]' ({exc})",
                file=sys.stderr,
            )
            return 2
        return int(server_main(args))
    parser = argparse.ArgumentParser(prog="ratiowatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SERVER_COMMANDS:
        commands.add_parser(name, help="server command (needs ratiowatch[server])")
    sync = commands.add_parser("sync", help="upload spooled (offline or unsent) steps")
    sync.add_argument(
        "path", nargs="?", type=Path, help="a run's spool folder, or a folder of them"
    )
    sync.add_argument("--url", help="server URL (default: the one each run was logged against)")
    parsed = parser.parse_args(args)
    return _sync(parsed.path, parsed.url)


def _sync(path: Path | None, url: str | None) -> int:
    from ratiowatch.sync import bar_printer, sync_path

    resolved = client_settings.resolve(url=None, mode=None, token=None, home=None)
    target = path or resolved.spool_root
    try:
        sent = sync_path(target, url=url, token=resolved.token, progress=bar_printer())
    except TransportError as exc:
        print(f"ratiowatch sync: server unreachable ({exc}); nothing was lost", file=sys.stderr)
        return 1
    print(f"ratiowatch sync: {sent} steps uploaded from {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
