"""The floor for `bench/rest_cpu.py`: a bare Quart app with one GET route, served the way
`parley serve` serves Parley (`app/serving.py`): Hypercorn with `app.cli.hypercorn_config`,
Hypercorn's fixes and reason phrases, uvloop, and every connection accepted by the lean front
(`LeanServer`, no stream path) and handed to Hypercorn's `TCPServer`. No database, no auth, no
middleware: what any Quart route costs on this serving path.

    python bench/bare_quart.py --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hypercorn.app_wrappers import ASGIWrapper  # noqa: E402
from hypercorn.asyncio.lifespan import Lifespan  # noqa: E402
from quart import Quart  # noqa: E402

from app import hypercorn_fixes  # noqa: E402
from app.cli import hypercorn_config  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.transports import reason_phrase  # noqa: E402
from app.transports.lean_http import LeanServer, StoppingContext  # noqa: E402

# The same shape and size as Parley's `GET /api/discussions/{id}` answer.
BODY = {
    "id": "AbCdEfGhIjKlMnOp",
    "title": "bench discussion",
    "visibility": "public",
    "created_by": "bench-user",
    "created_at": "2026-11-27T11:00:00.000Z",
    "participant_count": 0,
}


def make_app() -> Quart:
    app = Quart(__name__)

    @app.get("/api/discussions/<discussion_id>")
    async def discussion(discussion_id: str) -> dict[str, Any]:
        return {**BODY, "id": discussion_id}

    return app


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    settings = Settings.from_env({"PORT": str(port), "PARLEY_JWT_SECRET": "x" * 40})
    config = hypercorn_config(settings, "127.0.0.1", 1)
    sockets = config.create_sockets()
    app = ASGIWrapper(make_app())
    state: dict[str, Any] = {}
    lifespan = Lifespan(app, config, loop, state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    server = LeanServer(app, config, StoppingContext(None), state, None, None, settings.header_timeout_s)
    for sock in sockets.insecure_sockets:
        await server.listen(sock)
    await stopping.wait()
    server.stop_accepting()
    await server.wait_closed(1.0)
    await lifespan.wait_for_shutdown()
    lifespan_task.cancel()
    await asyncio.gather(lifespan_task, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    hypercorn_fixes.apply()
    reason_phrase.install()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
