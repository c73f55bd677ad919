"""Server-side commands, reached through the ``ratiowatch`` console script."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
import threading
from collections.abc import Sequence

import uvicorn

from ratiowatch_server import migrate
from ratiowatch_server.settings import DEFAULT_PORT, ServerSettings

logger = logging.getLogger("ratiowatch.server")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="ratiowatch")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the service and dashboard")
    _add_server_flags(serve)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback bind without auth"
    )
    demo = commands.add_parser("demo", help="the service plus a training loop that goes unstable")
    _add_server_flags(demo)
    demo.add_argument("--steps", type=int, default=400)
    demo.add_argument("--unstable-at", type=int, default=250)
    demo.add_argument("--delay", type=float, default=0.1, help="seconds between training steps")
    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"])
    db.add_argument("--db", dest="database_url", help="database URL")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        return _demo(args)
    settings = _settings(args)
    migrate.upgrade(settings.resolved_database_url())
    print(f"database at {_redacted(settings)} is at the latest schema")
    return 0


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--db", dest="database_url", default=None, help="database URL")


def _settings(args: argparse.Namespace) -> ServerSettings:
    """Flags override ``RATIOWATCH_*`` variables, which override defaults."""
    overrides = {
        key: getattr(args, key)
        for key in ("host", "port", "database_url", "workers")
        if getattr(args, key, None) is not None
    }
    return ServerSettings(**overrides)


def _redacted(settings: ServerSettings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not _is_loopback(settings.host) and not args.insecure:
        print(
            f"refusing to serve on {settings.host} without authentication; "
            "bind 127.0.0.1 or pass --insecure",
            file=sys.stderr,
        )
        return 2
    migrate.upgrade(settings.resolved_database_url())
    if settings.workers > 1:
        # Each worker process builds its own app from the environment.
        os.environ["RATIOWATCH_DATABASE_URL"] = settings.resolved_database_url()
        os.environ["RATIOWATCH_HOME"] = str(settings.home)
        uvicorn.run(
            "ratiowatch_server.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
        )
        return 0
    from ratiowatch_server.app import create_app

    uvicorn.run(create_app(settings, run_migrations=False), host=settings.host, port=settings.port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import ratiowatch
    from ratiowatch_server.app import create_app
    from ratiowatch_server.demo import DemoConfig, train

    settings = _settings(args)
    migrate.upgrade(settings.resolved_database_url())
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, run_migrations=False),
            host=settings.host,
            port=settings.port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="ratiowatch-demo-server", daemon=True)
    thread.start()
    url = f"http://{settings.host}:{settings.port}"
    print(f"ratiowatch dashboard: {url}/   (Ctrl-C to stop)", flush=True)
    config = DemoConfig(steps=args.steps, unstable_at=args.unstable_at, delay=args.delay)
    run = ratiowatch.init(
        project="demo",
        name=f"grpo-token-task-stale-at-{config.unstable_at}",
        config={"lr": config.lr, "samples_per_prompt": config.samples_per_prompt},
        url=url,
    )
    run.on_alert(lambda alert: print(f"ALERT at step {alert['step']}: {alert['message']}"))
    try:
        train(run, config)
        run.close()
        print(f"training finished; the dashboard stays up at {url}/", flush=True)
        thread.join()
    except KeyboardInterrupt:
        server.should_exit = True
    return 0
