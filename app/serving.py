"""Serving: what `parley serve` runs. Every connection is accepted by `transports/lean_http.py`
(per-IP connection limit), which serves `GET /stream` itself (the lean path, unless TLS or
`PARLEY_LEAN_STREAM=0`) and hands everything else to Hypercorn.

This follows Hypercorn's own `worker_serve` (hypercorn/asyncio/run.py): the app's lifespan is
run once per process by Hypercorn's `Lifespan`; the listening sockets are Hypercorn's
(`Config.create_sockets`, called by the CLI so a taken port is reported plainly); connections
handed over are run by Hypercorn's `TCPServer` with the same config, worker context and
lifespan state. Only the accept loop is ours.

Workers: with `WEB_CONCURRENCY` > 1 the parent creates the sockets (with SO_REUSEPORT, as
Hypercorn does) and spawns that many processes that inherit them, each running the lean front
on the same socket; the kernel spreads the accepts. Any worker exiting stops them all (a
process manager restarts the service), and SIGINT/SIGTERM to the parent stops them through
one shared event, as with Hypercorn.

Shutdown (SIGTERM/SIGINT), in this order, so nothing is cut: stop accepting; tell Hypercorn
(`context.terminated`: new HTTP/2 streams are refused, idle connections close, HTTP/2 ones
with a GOAWAY, see `hypercorn_fixes`); end every stream cleanly (lean streams with their last
chunk, then `Hub.stop()`: Quart SSE bodies end, WebSockets close with 1001, long-polls answer),
so each HTTP/2 connection is idle at once and sends its GOAWAY; wait for the connections to
finish (graceful timeout), then stop the app.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.synchronize import Event as EventType
from typing import Any

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.config import Config, Sockets
from hypercorn.utils import check_multiprocess_shutdown_event

from app import hypercorn_fixes, startup
from app.core.services import Services
from app.infra import logs, metrics
from app.infra.collector import Collector
from app.infra.ratelimit import Rate
from app.main import create_app
from app.settings import Settings
from app.transports import reason_phrase
from app.transports.lean_http import LeanServer, StoppingContext
from app.transports.lean_sse import LeanStreams

log = logging.getLogger(__name__)

WORKER_STOP_S = 10.0
# Past this, a stopping worker logs the stacks of the tasks it is still waiting on.
SLOW_SHUTDOWN_S = 6.0


def serve(config: Config, settings: Settings, sockets: Sockets, url: str) -> int:
    """Run `config.workers` workers (0: in this process) until told to stop; the one in this
    process, or the first spawned, says `url` once it serves."""
    hypercorn_fixes.apply()
    if config.workers == 0:
        # One process: its own registry, unless the operator set PROMETHEUS_MULTIPROC_DIR.
        with metrics.shared_directory(create=False):
            worker(config, settings, sockets, url=url)
        return 0
    with metrics.shared_directory():
        return _serve_workers(config, settings, sockets, url)


def _serve_workers(config: Config, settings: Settings, sockets: Sockets, url: str) -> int:
    gc.enable()  # off since `cli._serve`; this parent only waits (each spawned worker manages its own)
    ctx = get_context("spawn")
    shutdown_event = ctx.Event()
    # Children inherit SIG_IGN for SIGINT (a terminal's ^C reaches the whole group); the parent
    # alone decides, through shutdown_event.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes = [
        ctx.Process(
            target=worker,
            kwargs={
                "config": config,
                "settings": settings,
                "sockets": sockets,
                "shutdown_event": shutdown_event,
                "url": url if index == 0 else None,
            },
        )
        for index in range(config.workers)
    ]
    for process in processes:
        process.start()

    def stop(*_: Any) -> None:
        shutdown_event.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    wait([process.sentinel for process in processes])
    shutdown_event.set()
    exitcode = 0
    for process in processes:
        process.join(WORKER_STOP_S)
        if process.exitcode is None:
            process.terminate()
            process.join()
        if process.pid is not None:
            metrics.process_exited(process.pid)
        exitcode = exitcode or (process.exitcode or 0)
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.close()
    return exitcode


def worker(
    config: Config,
    settings: Settings,
    sockets: Sockets,
    shutdown_event: EventType | None = None,
    url: str | None = None,
) -> None:
    """One serving process: uvloop when installed (the lean path's writes are its hot loop)."""
    gc.disable()  # until the app has started (`worker_serve`), as in `cli._serve`
    logs.configure(settings.log_level)
    hypercorn_fixes.apply()  # a spawned worker imports Hypercorn afresh
    reason_phrase.install()
    trigger = None
    if shutdown_event is not None:
        trigger = partial(check_multiprocess_shutdown_event, shutdown_event, asyncio.sleep)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(worker_serve(config, settings, sockets, trigger, url))
    except Exception as error:
        failure = startup.cause(error)
        if shutdown_event is None or failure is None:
            raise  # in this process: the CLI reports it
        # A spawned worker: say why in one or two lines, not a traceback; the parent stops.
        log.debug("start-up failed", exc_info=error)
        startup.report(failure)
        sys.exit(1)


async def worker_serve(
    config: Config,
    settings: Settings,
    sockets: Sockets,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    url: str | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    if shutdown_trigger is None:
        stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        shutdown_trigger = stopping.wait

    quart_app = create_app(settings)
    app = ASGIWrapper(quart_app)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(app, config, loop, lifespan_state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done():
        exception = lifespan_task.exception()
        if exception is not None:
            raise exception

    parley: Services = quart_app.extensions["parley"]
    streams = LeanStreams(parley)
    # Everything loaded so far (modules, the app) lives as long as the process: keep it out of
    # the collector's generations, so collections during a connect storm walk only new objects.
    # The collector was off during start-up (`cli._serve`): the little garbage start-up left is
    # frozen with the rest rather than paying a full collection (~0.1 s) before listening.
    gc.freeze()
    gc.enable()
    collector = None
    if settings.gc_freeze_s > 0:
        collector = loop.create_task(
            Collector(freeze_every_s=settings.gc_freeze_s, full_every_s=settings.gc_full_s).run(), name="collector"
        )
    context = StoppingContext(None)
    lean = settings.lean_stream and not config.ssl_enabled
    connect_rate = Rate.per_minute(settings.connect_limit_per_min)
    server = LeanServer(
        app, config, context, lifespan_state, streams.open if lean else None, connect_rate, settings.header_timeout_s
    )
    try:
        if sockets.secure_sockets:
            ssl_context = config.create_ssl_context()
            for sock in sockets.secure_sockets:
                await server.listen(sock, ssl_context)
                log.info("listening with TLS (HTTP/2) on %s", sock.getsockname())
        for sock in sockets.insecure_sockets:
            await server.listen(sock)
            log.info("listening on %s (lean stream path %s)", sock.getsockname(), "on" if lean else "off")
        if url is not None:
            startup.announce(url)
        await shutdown_trigger()
    finally:
        watchdog = loop.create_task(_report_slow_shutdown(SLOW_SHUTDOWN_S))
        server.stop_accepting()
        await context.terminated.set()
        parley.presence.stopping()
        await streams.close()
        parley.hub.stop()
        await server.wait_closed(config.graceful_timeout)
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        await asyncio.gather(lifespan_task, return_exceptions=True)
        watchdog.cancel()
        if collector is not None:
            collector.cancel()


async def _report_slow_shutdown(after_s: float) -> None:
    """If stopping takes longer than `after_s`, log what every task is still waiting on: a
    shutdown that hangs (a platform then kills the process) must say where."""
    await asyncio.sleep(after_s)
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        stack = io.StringIO()
        task.print_stack(file=stack)
        log.warning("shutdown still waiting after %.0fs on %s:\n%s", after_s, task.get_name(), stack.getvalue())
