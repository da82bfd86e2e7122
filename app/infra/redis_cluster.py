"""The event log's own Redis connection when `PARLEY_LOG_REDIS_URL` is set: a Redis Cluster
(`redis+cluster://host:port`) or a separate single Redis (docs/SCALING.md).

`RedisClusterConnection` offers what `RedisConnection` offers (a pooled `client`,
`blocking_reader()`, `server_time_ms()`, `ping()`, `close()`), so the log runs on either.
`connect(url)` is the one place that picks which: everything else takes the object it builds.
Like `RedisConnection`, it is built once per process (`app.core.backends.make_backends`) and
closed once, closing every blocking reader it handed out.

A cluster URL names any one node (`redis+cluster://`, or `rediss+cluster://` for TLS); the
client learns the others from it (CLUSTER SLOTS), follows MOVED/ASK redirections and finds the
new master after a failover (redis-py `RedisCluster`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, TypeAlias

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from app.infra.redis_connection import KEEPALIVE_OPTIONS, RedisConnection, close_clients, time_ms
from app.infra.redis_options import CONNECT_TIMEOUT_S

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# Commands in flight at once. A cluster client has no blocking pool: past its pool's size it
# refuses a command, so callers wait on `commands` instead (each node's pool is twice as big).
MAX_COMMANDS = 50
# Redirections and failovers: how often a cluster command is retried after refreshing the
# slot map (a failover takes the cluster's node timeout plus an election, seconds).
CLUSTER_ATTEMPTS = 10

# The commands the log uses exist on both, with the same signatures.
AnyRedis: TypeAlias = "redis.Redis | RedisCluster"
AnyRedisConnection: TypeAlias = "RedisConnection | RedisClusterConnection"


def is_cluster(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def is_cluster_client(client: AnyRedis) -> bool:
    return isinstance(client, RedisCluster)


def connect(url: str) -> AnyRedisConnection:
    """The connection object for `url`: a cluster's for `redis+cluster://`, else one Redis's."""
    return RedisClusterConnection(url) if is_cluster(url) else RedisConnection(url)


def _node_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES[scheme]}://{rest}"


def _cluster(url: str, **options: Any) -> RedisCluster:
    return RedisCluster.from_url(
        _node_url(url),
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CLUSTER_ATTEMPTS),
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        **options,
    )


class RedisClusterConnection:
    """The cluster client (`client`), blocking readers, and a clock, for one cluster URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: RedisCluster = _cluster(url, max_connections=2 * MAX_COMMANDS)
        # At most MAX_COMMANDS at once (see above); the log enters it around each command.
        self.commands = asyncio.Semaphore(MAX_COMMANDS)
        self._readers: weakref.WeakSet[RedisCluster] = weakref.WeakSet()

    def blocking_reader(self) -> RedisCluster:
        """A cluster client for blocking reads (XREAD BLOCK), on connections of its own; no
        socket timeout, TCP keepalive instead (why: `RedisConnection.blocking_reader`)."""
        reader = _cluster(
            self.url, socket_timeout=None, socket_keepalive=True, socket_keepalive_options=KEEPALIVE_OPTIONS
        )
        self._readers.add(reader)
        return reader

    async def server_time_ms(self) -> int:
        """The clock of one node (the client's default): a cluster has one clock per node."""
        return time_ms(await self.client.execute_command("TIME", target_nodes=RedisCluster.DEFAULT_NODE))

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        """Close the client and every blocking reader (closing one twice is harmless)."""
        await close_clients(self._readers, self.client)
