"""Parley's real-time layer. `create_app` is the composition root: it reads nothing itself
but the settings it is given, builds every part, owns their lifetimes and background tasks."""

from __future__ import annotations

import asyncio
import logging
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
from app.notify.worker import start_notifications
from app.settings import Settings, StartupError
from app.web import error_response, http_security
from app.web.contract import enforce_contract
from app.web.requests import refuse_unstorable_url

log = logging.getLogger(__name__)

PRESENCE_DRAIN_S = 1.0
USERS_FLUSH_S = 2.0
TASKS_STOP_S = 5.0


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
    tasks: set[asyncio.Task[Any]] = set()

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
    http_security.install(app, settings)
    app.before_request(refuse_unstorable_url)
    app.before_websocket(refuse_unstorable_url)

    if settings.check_responses:
        app.after_request(enforce_contract)
    app.register_blueprint(account.blueprint)
    if settings.access_log:
        access_log.install(app)

    # Every error, one answer shape (`app/web/error_response.py`).
    for kind in (ApiError, HTTPException, RedisError, Exception):
        app.register_error_handler(kind, error_response.handle)

    @app.before_serving
    async def start() -> None:
        # Each step raises a StartupError naming the setting at fault (app/startup.py).
        # Redis first: it fails fast, before a fresh SQLite file's migrations fill the screen.
        # (Embedded, opening takes the data directory's lock first.)
        backends = await startup.open_backends(settings)
        app.extensions["parley.backends"] = backends
        event_log, presence_store = backends.event_log, backends.presence_store
        db = Database(settings.database_url)
        await startup.ready_database(settings, db)
        if backends.lock is not None:
            log.info("embedded event log (no REDIS_URL): this process must be the only one")
        if settings.dev_login:
            log.warning("development login is ON (PARLEY_DEV_LOGIN): anyone can sign in as anyone")
        metrics = Metrics()
        node = Node(event_log, presence_store, metrics, StreamSettings.of(settings))
        app.extensions["parley"] = parley = Services(
            settings=settings,
            metrics=metrics,
            db=db,
            node=node,
            auth=Authenticator(settings),
            rate_limit=backends.limits,
            users=UserDirectory(db),
        )
        watch_access(node.hub, parley.read_access)  # membership changes, from every process
        node.recheck_access = parley.may_read  # closes the race of a connect with a removal
        spawn(node.hub.run(), "hub")
        spawn(node.presence.run(), "presence")
        spawn(parley.users.run(), "users")
        spawn(OutboxRelay(parley).run(), "outbox")
        spawn(RetentionSweeper(db, settings).run(), "retention")
        await start_notifications(app.extensions, parley, backends, spawn)
        await start_analysis(parley, backends, spawn)

    def spawn(coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        tasks.add(task)
        task.add_done_callback(_finished)

    def _finished(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

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
        for task in list(tasks):
            task.cancel()
        if tasks:
            # Bounded: a task that swallowed its cancellation must not keep the process up.
            _, stuck = await asyncio.wait(set(tasks), timeout=TASKS_STOP_S)
            for task in stuck:
                log.error("background task %s did not stop within %.0fs; leaving it", task.get_name(), TASKS_STOP_S)
        parley: Services | None = app.extensions.pop("parley", None)
        if parley is not None:
            await parley.db.close()
        # The log, the presence store and the one Redis connection all of them shared.
        backends: Backends | None = app.extensions.pop("parley.backends", None)
        if backends is not None:
            await backends.close()

    return app
