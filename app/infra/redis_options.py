"""Connection options every Redis client of Parley shares, so a Redis restart costs nothing.

After Redis restarts, every pooled connection is a dead socket, and the first command on each
fails although Redis is back (issue 11: 3 of 80 posts 15 s after a restart). So a connection
idle for HEALTH_CHECK_S is checked (PING) before use, and a command that meets a dead
connection is retried on a fresh one (COMMAND_RETRIES times, backing off). Retrying is safe: a
command sent on a socket whose server went away never ran; Parley's scripts are idempotent
for a retry (presence and leases set state, appends of stored events carry an outbox key).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

HEALTH_CHECK_S = 5
COMMAND_RETRIES = 2
CONNECT_TIMEOUT_S = 5.0


def resilient() -> dict[str, Any]:
    """Keyword arguments for `Redis.from_url` / `ConnectionPool.from_url`."""
    return {
        "health_check_interval": HEALTH_CHECK_S,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
