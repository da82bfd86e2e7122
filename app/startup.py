"""What `parley serve` (and `parley work`) says when it starts: the URL to open, or, when a setting keeps it from
starting, one or two lines naming that setting and what to do (no traceback; the full detail
is logged at PARLEY_LOG_LEVEL=DEBUG).

A failure deep in start-up (the app's `before_serving`) raises a `StartupError`; Hypercorn
reports it as its own `LifespanFailureError`, raised while Quart was handling ours, so the
entry points find ours behind it (`cause`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from urllib.parse import urlsplit, urlunsplit

from hypercorn.config import Config, Sockets
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.core.backends import Backends, make_backends
from app.infra import migrate
from app.infra.db import Database
from app.settings import Settings, StartupError

# A backing service that has not answered by then is unreachable (a firewalled host would
# otherwise hold start-up for the OS's minutes-long connect timeout).
CHECK_TIMEOUT_S = 10.0


async def ready_database(settings: Settings, db: Database) -> None:
    """Migrate a SQLite file that is behind, then make sure the database answers."""
    try:
        if settings.sqlite_path is not None and not migrate.sqlite_at_head(settings.sqlite_path):
            lock_path = settings.sqlite_path.with_name(settings.sqlite_path.name + ".migrate-lock")
            await asyncio.to_thread(migrate.upgrade, settings.database_url, lock_path)
        await asyncio.wait_for(db.ping(), CHECK_TIMEOUT_S)
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        raise database_unreachable(settings.database_url, error) from error


async def open_backends(settings: Settings) -> Backends:
    """Every backend (in Redis when REDIS_URL is set), built and opened: the event log and
    the presence store answer. On failure nothing is left open."""
    backends: Backends | None = None
    try:
        backends = make_backends(settings)
        await asyncio.wait_for(backends.open(), CHECK_TIMEOUT_S)
    except BaseException as error:
        if backends is not None:
            with contextlib.suppress(Exception):
                await backends.close()
        if settings.redis_url is None or not isinstance(error, (RedisError, ValueError, OSError, TimeoutError)):
            raise
        raise redis_unusable(settings.redis_url, error) from error
    return backends


def check_workers(settings: Settings) -> None:
    """`parley serve` with PARLEY_WORKERS=0 leaves the workers to `parley work` processes,
    which share the event log through Redis: embedded, no other process could run them."""
    if not settings.run_workers and settings.embedded:
        raise StartupError(
            "PARLEY_WORKERS=0 needs REDIS_URL: without it the event log lives in this one process, "
            "and no `parley work` process could read it.\n"
            "Set REDIS_URL (and run `parley work` beside), or unset PARLEY_WORKERS to run the workers here."
        )


def check_work(settings: Settings) -> None:
    """`parley work` reads the event log other processes write: it must be in Redis."""
    if settings.embedded:
        raise StartupError(
            "parley work needs REDIS_URL: it reads the event log the web processes write, and "
            "without REDIS_URL that log lives inside a `parley serve` process.\n"
            "Set REDIS_URL (and DATABASE_URL) as for the web processes, or run `parley serve` alone."
        )


def cause(error: BaseException) -> StartupError | None:
    """The StartupError behind `error`, if one is."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, StartupError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def report(error: StartupError) -> None:
    print(f"parley: {error}", file=sys.stderr, flush=True)


def _first_line(error: BaseException) -> str:
    """The gist of a driver's error: SQLAlchemy wraps it in the SQL and a help link."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def without_password(url: str) -> str:
    """A URL fit to print: its password, if any, masked."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(unparseable URL)"


def database_unreachable(url: str, error: BaseException) -> StartupError:
    return StartupError(
        f"cannot use the database at DATABASE_URL={without_password(url)}: {_first_line(error)}\n"
        "Start the database or fix DATABASE_URL (unset, Parley keeps a SQLite file, parley.db)."
    )


def redis_unusable(url: str, error: BaseException) -> StartupError:
    if isinstance(error, ValueError):
        return StartupError(
            f"REDIS_URL={without_password(url)} is not a usable Redis URL: {_first_line(error)}\n"
            "Use redis://host:port/db (rediss:// for TLS), or unset REDIS_URL for the embedded event log."
        )
    return StartupError(
        f"cannot reach Redis at REDIS_URL={without_password(url)}: {_first_line(error)}\n"
        "Start Redis or fix REDIS_URL, or unset it for the embedded event log (one process)."
    )


def bind(config: Config, host: str, port: int) -> Sockets:
    """The listening sockets for `config.bind`, or a StartupError naming PORT or PARLEY_HOST."""
    try:
        return config.create_sockets()
    except OSError as error:
        raise _bind_failure(host, port, error) from error


def _bind_failure(host: str, port: int, error: OSError) -> StartupError:
    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return StartupError(
            f"PORT={port}: {where} is already in use (another Parley, or another program).\n"
            "Stop that server, or set PORT to a free port."
        )
    if error.errno == errno.EACCES:
        return StartupError(f"PORT={port}: binding {where} is not permitted here. Set PORT to 1024 or above.")
    if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(error, socket.gaierror):
        return StartupError(
            f"PARLEY_HOST={host}: cannot listen on {where}: {error.strerror or error}.\n"
            "Set PARLEY_HOST to an address of this machine (127.0.0.1, or 0.0.0.0 for all)."
        )
    return StartupError(f"PORT={port}, PARLEY_HOST={host}: cannot listen on {where}: {error.strerror or error}.")


def open_url(host: str, port: int, tls: bool) -> str:
    """The URL a person opens for a server bound to `host`: a wildcard means this machine."""
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/"


def announce(url: str) -> None:
    """Say where to go, on stdout (the logs are JSON on stderr)."""
    print(f"Parley is serving on {url} (Ctrl+C to stop)", flush=True)
