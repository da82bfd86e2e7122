"""Background loops that log errors and retry must still stop when they are cancelled.

redis-py can turn the cancellation of a command waiting on its socket into a ConnectionError
(`eventlog_redis.tail` saw it first). A loop that catches `Exception`, logs and retries would
then swallow the cancellation and run on, and shutdown, waiting for it, hangs (seen in the
herd benchmark: a process that took 15 s to stop, until killed; the slow-shutdown report showed
the presence loop "cancelling" yet waiting for its next round). Each such loop asks here.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """At the top of a background loop: stop if a cancellation was swallowed on the way here
    (by a library call that caught it and returned normally). The task still says it is being
    cancelled (`Task.cancelling()`), so the loop can tell, and must not go round again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def stop_if_cancelled(error: BaseException) -> None:
    """Raise CancelledError if the current task has been asked to stop while `error` happened."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from error
