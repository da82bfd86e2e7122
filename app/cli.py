"""`parley serve`: run Parley on Hypercorn, bound to $PORT (the Procfile's `web:`);
`parley work`: run only the workers (notifications, analysis, retention), no listener (the
Procfile's optional `worker:`, beside web processes started with PARLEY_WORKERS=0);
`parley migrate`: bring the database to the newest schema (the Procfile's `release:`).

Every connection is accepted by our front (`app/serving.py`): over plain TCP it serves
`GET /stream` on its own and hands everything else to Hypercorn on the same port; with TLS
(PARLEY_TLS_CERT/KEY) or PARLEY_LEAN_STREAM=0 every connection is Hypercorn's once accepted.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from app.infra import logs
from app.settings import ConfigError, Settings

if TYPE_CHECKING:
    from hypercorn.config import Config

# Hypercorn, SQLAlchemy and the app are imported by the command that needs them (`_serve`,
# `_work`, `_migrate`), so `parley --help` and a mistyped command answer at once.

log = logging.getLogger(__name__)

# Above the ~90 s idle timeout PaaS routers apply (PITFALLS, "SSE and HTTP/2").
KEEP_ALIVE_S = 120
# Connections the kernel queues before we accept them. Hypercorn's default (100) drops the SYNs
# of a reconnect storm past it, and each dropped client waits out a 1 s, 3 s, 7 s SYN retry:
# after a restart, 5,000 clients took many seconds longer to get in. Capped by somaxconn.
LISTEN_BACKLOG = 4096


def hypercorn_config(settings: Settings, host: str, workers: int) -> Config:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{settings.port}"]
    # workers=0 serves in this very process; more spawn that many worker processes.
    config.workers = 0 if workers == 1 else workers
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.graceful_timeout = 3
    config.backlog = LISTEN_BACKLOG
    # No access log: request lines carry query strings. Hypercorn's own messages go through our
    # JSON logging (a Logger instance is used as it is, without Hypercorn's extra handler).
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = 64 * 1024
    config.websocket_ping_interval = 25
    cert, key = os.environ.get("PARLEY_TLS_CERT"), os.environ.get("PARLEY_TLS_KEY")
    if cert and key:
        config.certfile, config.keyfile = cert, key
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API, the streams and the page")
    serve.add_argument(
        "--host", help="address to bind (default: PARLEY_HOST, else 127.0.0.1 with development login on, else 0.0.0.0)"
    )
    commands.add_parser(
        "work", help="run only the workers (notifications, analysis, retention); web processes set PARLEY_WORKERS=0"
    )
    commands.add_parser("migrate", help="apply the database migrations (the Procfile's release phase)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"parley: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "work":
        return _work(settings)
    if settings.embedded and settings.workers > 1:
        print(
            f"parley: WEB_CONCURRENCY={settings.workers}, but without REDIS_URL the event log lives in one "
            "process. Set REDIS_URL to run several workers, or run one.",
            file=sys.stderr,
        )
        return 2
    if args.host:
        settings = replace(settings, host=args.host)
    return _reporting_start_up_failures(lambda: _serve(settings))


def _reporting_start_up_failures(run: Callable[[], int]) -> int:
    """`run()`; a start-up failure (a setting at fault, a backend down) is said in a line or
    two and exits 1, not a traceback."""
    from app import startup

    try:
        return run()
    except Exception as error:
        failure = startup.cause(error)
        if failure is None:
            raise
        log.debug("start-up failed", exc_info=error)
        startup.report(failure)
        return 1


def _serve(settings: Settings) -> int:
    # No cyclic garbage collection while the modules load and the app starts: the collector
    # would walk the growing heap again and again for almost nothing (~900 unreachable objects
    # in all), ~12 % of the start-up's CPU. `serving.worker_serve` freezes what start-up made
    # and turns it back on before the first connection.
    gc.disable()
    from app import serving, startup

    config = hypercorn_config(settings, settings.host, settings.workers)
    sockets = startup.bind(config, settings.host, settings.port)
    url = startup.open_url(settings.host, settings.port, config.ssl_enabled)
    return serving.serve(config, settings, sockets, url)


def _work(settings: Settings) -> int:
    """Run the workers until SIGTERM or SIGINT; a start-up failure is said in a line or two."""
    import asyncio
    import signal

    from app.main import run_workers

    async def work() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_workers(settings, stop)

    return _reporting_start_up_failures(lambda: asyncio.run(work()))


def _migrate(settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from app import startup
    from app.infra import migrate

    try:
        migrate.upgrade(settings.database_url)
    except (SQLAlchemyError, OSError) as error:
        log.debug("migration failed", exc_info=error)
        startup.report(startup.database_unreachable(settings.database_url, error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
