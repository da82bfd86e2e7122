"""Parley's real-time layer. `create_app` is the composition root: it reads nothing itself
but the settings it is given, builds every part, owns their lifetimes and background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from quart import Quart
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from app import startup
from app.analysis.worker import start_analysis
from app.auth import Authenticator
from app.core.access_watch import watch_access
from app.core.backends import Backends
from app.core.node import Node, StreamSettings
from app.core.outbox import OutboxRelay
from app.core.services import Services
from app.domain.retention import RetentionSweeper
from app.domain.users import UserDirectory
from app.errors import ApiError
from app.infra.db import Database
from app.infra.metrics import Metrics
from app.infra.resources import STATIC_DIR
from app.notify.worker import NotifyParts, notify_parts, start_notifications
from app.settings import Settings, StartupError
from app.web import error_response, http_security, request_hooks
from app.web.contract import enforce_contract
from app.web.requests import refuse_unstorable_url

log = logging.getLogger(__name__)

PRESENCE_DRAIN_S = 1.0
USERS_FLUSH_S = 2.0
TASKS_STOP_S = 5.0

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class _Quart(Quart):
    def log_exception(
        self, exception_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None]
    ) -> None:
        # A setting that keeps Parley from starting is said in one or two lines by the entry
        # point (app/startup.py); its traceback is logged there, at DEBUG.
        if isinstance(exception_info[1], StartupError):
            return
        super().log_exception(exception_info)


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    app = _Quart(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["PARLEY_SETTINGS"] = settings

    from app.api import (
        account,
        analysis,
        beacons,
        broadcasts,
        discussions,
        members,
        notifications,
        ops,
        pages,
        presence,
        reference,
        responses,
        session,
    )
    from app.infra import access_log
    from app.transports import poll, sse, ws

    blueprints = (
        ops,
        session,
        discussions,
        responses,
        members,
        analysis,
        broadcasts,
        notifications,
        presence,
        beacons,
        sse,
        ws,
        poll,
        pages,
        reference,
    )
    for module in blueprints:
        app.register_blueprint(module.blueprint)
    app.register_blueprint(account.blueprint)
    refuse_cross_site, add_security_headers = http_security.install(app, settings)
    before: list[request_hooks.BeforeRequest] = [refuse_cross_site, refuse_unstorable_url]
    after: list[request_hooks.AfterRequest] = [add_security_headers]  # last: on every answer
    if settings.check_responses:
        after.insert(0, enforce_contract)
    if settings.access_log:
        access_started, access_finished = access_log.hooks()
        before.append(access_started)
        after.insert(0, access_finished)
    request_hooks.install(app, before, after)
    app.before_websocket(refuse_unstorable_url)

    # Every error, one answer shape (`app/web/error_response.py`).
    for kind in (ApiError, HTTPException, RedisError, Exception):
        app.register_error_handler(kind, error_response.handle)

    tasks = BackgroundTasks()
    spawn = tasks.spawn

    @app.before_serving
    async def start() -> None:
        # Each step raises a StartupError naming the setting at fault (app/startup.py).
        startup.check_workers(settings)
        parley, backends = await open_services(settings, app.extensions)
        node = parley.node
        if backends.lock is not None:
            log.info("embedded event log (no REDIS_URL): this process must be the only one")
        if settings.dev_login:
            log.warning("development login is ON (PARLEY_DEV_LOGIN): anyone can sign in as anyone")
        watch_access(node.hub, parley.read_access)  # membership changes, from every process
        node.recheck_access = parley.may_read  # closes the race of a connect with a removal
        spawn(node.hub.run(), "hub")
        spawn(node.presence.run(), "presence")
        spawn(parley.users.run(), "users")
        # Every web process relays its own requests' outbox rows (it alone knows which it
        # appended) and tells the notification worker, wherever it runs, who is online here.
        spawn(OutboxRelay(parley).run(), "outbox")
        notify = await notify_parts(parley, backends)
        app.extensions["parley.push"] = notify.pusher  # the page asks for its VAPID key
        spawn(notify.active.run(), "active-users")
        if settings.run_workers:
            await start_workers(parley, backends, notify, spawn)
        else:
            log.info("PARLEY_WORKERS=0: the journal workers run elsewhere (`parley work`)")

    @app.after_serving
    async def stop() -> None:
        running: Services | None = app.extensions.get("parley")
        if running is not None:
            # Connections closed during shutdown leave now, not at their expiry.
            running.presence.stopping()
            await running.presence.drain(PRESENCE_DRAIN_S)
            try:
                await asyncio.wait_for(running.users.flush(), USERS_FLUSH_S)
            except Exception:  # shutdown goes on: those users are written on their next visit
                log.warning("users: could not write the queued users before stopping")
        await tasks.cancel_all()
        await close_services(app.extensions)

    return app


class BackgroundTasks:
    """A process's background tasks: spawned by name, logged if one fails, all cancelled at
    shutdown with a bounded wait. `failed` is set once any of them ends with an error."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = asyncio.Event()

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())
            self.failed.set()

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            # Bounded: a task that swallowed its cancellation must not keep the process up.
            _, stuck = await asyncio.wait(set(self._tasks), timeout=TASKS_STOP_S)
            for task in stuck:
                log.error("background task %s did not stop within %.0fs; leaving it", task.get_name(), TASKS_STOP_S)


async def open_services(settings: Settings, extensions: dict[str, Any]) -> tuple[Services, Backends]:
    """The backends, the database and the `Services` over them, kept in `extensions` (so that
    `close_services` closes whatever was opened, even when a later step failed)."""
    # Redis first: it fails fast, before a fresh SQLite file's migrations fill the screen.
    # (Embedded, opening takes the data directory's lock first.)
    backends = await startup.open_backends(settings)
    extensions["parley.backends"] = backends
    db = Database(settings.database_url)
    await startup.ready_database(settings, db)
    metrics = Metrics()
    node = Node(backends.event_log, backends.presence_store, metrics, StreamSettings.of(settings))
    extensions["parley"] = parley = Services(
        settings=settings,
        metrics=metrics,
        db=db,
        node=node,
        auth=Authenticator(settings),
        rate_limit=backends.limits,
        users=UserDirectory(db),
    )
    return parley, backends


async def close_services(extensions: dict[str, Any]) -> None:
    """Close what `open_services` opened: the database, then the backends (the log, the
    presence store and the one Redis connection all of them shared)."""
    parley: Services | None = extensions.pop("parley", None)
    if parley is not None:
        await parley.db.close()
    backends: Backends | None = extensions.pop("parley.backends", None)
    if backends is not None:
        await backends.close()


async def start_workers(parley: Services, backends: Backends, notify: NotifyParts, spawn: Spawn) -> None:
    """The workers (PARLEY_WORKERS): the two journal workers, one lease holder per cluster,
    and the retention sweeper (batch deletes; idempotent, so any process may run it). Run by
    `parley serve` (PARLEY_WORKERS=1, the default) and by `parley work`.

    Not workers, so in every web process whatever PARLEY_WORKERS says: the outbox relay (a
    process deletes the rows its own requests appended), the active users (who is online on
    this process), the hub, presence and the users writer."""
    spawn(RetentionSweeper(parley.db, parley.settings).run(), "retention")
    await start_notifications(parley, backends, notify, spawn)
    await start_analysis(parley, backends, spawn)


WORKERS_READY = "Parley workers are running (SIGTERM or Ctrl+C to stop)"


async def run_workers(settings: Settings, stop: asyncio.Event) -> int:
    """`parley work`: the workers alone, on this process's own backends and database (no
    listener, no streams), until `stop` is set (0) or a worker task fails (1: the process
    manager restarts it). Says `WORKERS_READY` on stdout once the workers hold their places."""
    startup.check_work(settings)
    extensions: dict[str, Any] = {}
    tasks = BackgroundTasks()
    try:
        parley, backends = await open_services(settings, extensions)
        notify = await notify_parts(parley, backends)
        await start_workers(parley, backends, notify, tasks.spawn)
        print(WORKERS_READY, flush=True)
        stopping = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(tasks.failed.wait())
        try:
            await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            failing.cancel()
        return 1 if tasks.failed.is_set() else 0
    finally:
        # Cancelled, each journal consumer releases its lease: a successor takes over at once.
        await tasks.cancel_all()
        await close_services(extensions)
