"""The event log's Redis clients: one Redis, or a Redis Cluster (`redis+cluster://host:port`).

Kept in this one small module so that the shared connection object of `app/infra` can take it
over: everything else in the log only asks for "the pooled client" and "a blocking reader".

A cluster URL names any one node (`redis+cluster://`, or `rediss+cluster://` for TLS); the
client learns the others from it (CLUSTER SLOTS), follows MOVED/ASK redirections and finds the
new master after a failover (redis-py `RedisCluster`).
"""

from __future__ import annotations

import socket
from typing import Any, TypeAlias

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from app.infra.redis_options import resilient

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
CONNECT_TIMEOUT_S = 5.0
# Probe an idle reader connection after 10 s, every 5 s, give up after 3 misses (~25 s).
KEEPALIVE_OPTIONS = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}
POOL_SIZE = 50
POOL_WAIT_S = 10.0
# Redirections and failovers: how often a cluster command is retried after refreshing the
# slot map (a failover takes the cluster's node timeout plus an election, seconds).
CLUSTER_ATTEMPTS = 10

# The commands the log uses exist on both, with the same signatures.
LogClient: TypeAlias = "redis.Redis | RedisCluster"


def is_cluster(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def is_cluster_client(client: LogClient) -> bool:
    return isinstance(client, RedisCluster)


def _node_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES[scheme]}://{rest}"


def _cluster(url: str, **options: Any) -> RedisCluster:
    return RedisCluster.from_url(
        _node_url(url),
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CLUSTER_ATTEMPTS),
        max_connections=2 * POOL_SIZE,  # per node; RedisEventLog keeps to POOL_SIZE commands at once
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        **options,
    )


def pooled_client(url: str) -> LogClient:
    """The process's client for appends and catch-up reads.

    One Redis: a blocking pool, so a burst of appends waits for a connection instead of failing
    past the pool's size (PITFALLS: the default pool raises beyond 100)."""
    if is_cluster(url):
        return _cluster(url)
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, **resilient())
    return redis.Redis(connection_pool=pool)


def blocking_reader(url: str) -> LogClient:
    """A client for blocking reads (XREAD BLOCK), on connections of its own.

    No socket timeout: with redis-py 8 on Python 3.11, cancelling a read that runs under a
    socket timeout is sometimes swallowed, and shutdown hangs (reproduced: 5 of 60 cancels).
    Blocking reads return every few seconds anyway; TCP keepalive notices a dead Redis host.
    """
    options: dict[str, Any] = {
        "socket_timeout": None,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE_OPTIONS,
    }
    if is_cluster(url):
        return _cluster(url, **options)
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, **options)
