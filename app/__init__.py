"""Parley's real-time layer. `create_app` is the composition root: it reads nothing itself
but the settings it is given, builds every part, owns their lifetimes and background tasks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from quart import Quart, Response, jsonify
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from . import migrate
from .analysis_worker import start_analysis
from .auth import Authenticator
from .backends import EmbeddedLock, make_event_log, make_presence_store, make_rate_limiter
from .contract import enforce_contract
from .db import Database
from .errors import ApiError
from .hub import Hub
from .metrics import Metrics
from .notify_worker import start_notifications
from .presence_tracker import PresenceTracker
from .services import Services
from .settings import Settings
from .users import UserDirectory

log = logging.getLogger(__name__)

PRESENCE_DRAIN_S = 1.0
USERS_FLUSH_S = 2.0
TASKS_STOP_S = 5.0
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    app = Quart(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["PARLEY_SETTINGS"] = settings
    tasks: set[asyncio.Task[Any]] = set()
    lock = EmbeddedLock(settings.data_dir) if settings.embedded else None

    from . import pages
    from .api import analysis, broadcasts, discussions, notifications, ops, presence, reference, session
    from .transports import poll, sse, ws

    blueprints = (
        ops,
        session,
        discussions,
        analysis,
        broadcasts,
        notifications,
        presence,
        sse,
        ws,
        poll,
        pages,
        reference,
    )
    for module in blueprints:
        app.register_blueprint(module.blueprint)

    if settings.check_responses:
        app.after_request(enforce_contract)

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> tuple[Response, int] | Response:
        response = jsonify(error.to_json())
        response.status_code = error.status
        retry_after = getattr(error, "retry_after_s", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}
        response = jsonify({"error": {"code": codes.get(status, "http_error"), "message": error.description or ""}})
        response.status_code = status
        return response

    @app.errorhandler(RedisError)
    async def redis_down(error: RedisError) -> Response:
        # Redis (event log, rate limits) unreachable: retryable, and the client is told so.
        log.error("redis unavailable: %s", error)
        response = jsonify({"error": {"code": "unavailable", "message": "a backing service is unreachable; retry"}})
        response.status_code = 503
        response.headers["Retry-After"] = "2"
        return response

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        response = jsonify({"error": {"code": "internal_error", "message": "something went wrong on our side"}})
        response.status_code = 500
        return response

    @app.before_serving
    async def start() -> None:
        if lock is not None:
            lock.acquire()
            log.info("embedded event log (no REDIS_URL): this process must be the only one")
        if settings.sqlite_path is not None and not migrate.sqlite_at_head(settings.sqlite_path):
            lock_path = settings.sqlite_path.with_name(settings.sqlite_path.name + ".migrate-lock")
            await asyncio.to_thread(migrate.upgrade, settings.database_url, lock_path)
        if settings.dev_login:
            log.warning("development login is ON (PARLEY_DEV_LOGIN): anyone can sign in as anyone")
        metrics = Metrics()
        event_log = make_event_log(settings)
        await event_log.open()
        hub = Hub(event_log, metrics)
        presence_store = make_presence_store(settings)
        await presence_store.open()
        tracker = PresenceTracker(presence_store, hub, sweep_interval_s=settings.presence_sweep_s)
        db = Database(settings.database_url)
        app.extensions["parley"] = parley = Services(
            settings=settings,
            metrics=metrics,
            db=db,
            log=event_log,
            hub=hub,
            auth=Authenticator(settings),
            rate_limit=make_rate_limiter(settings, event_log),
            presence=tracker,
            users=UserDirectory(db),
        )
        tracker.attach(parley.publish)
        spawn(hub.run(), "hub")
        spawn(tracker.run(), "presence")
        spawn(parley.users.run(), "users")
        await start_notifications(app.extensions, app.extensions["parley"], spawn)
        await start_analysis(parley, spawn)

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
            await parley.log.close()
            await parley.presence.store.close()
            await parley.db.close()
        if lock is not None:
            lock.release()

    return app
