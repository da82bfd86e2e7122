"""A durable append that waits for replicas (`PARLEY_LOG_WAIT_REPLICAS`, docs/SCALING.md).

Redis replicates asynchronously: a master killed right after acknowledging an append may not
have sent it to its replica yet, and the replica promoted in its place never had it. `WAIT n`
after the append script, *on the same connection* (it counts that connection's writes), answers
once n replicas have everything written before it. Both go in one pipeline: one connection on
one Redis; on a cluster, commands aimed at one node share one connection, so WAIT is aimed at
the node that holds the shard's slot.
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from app.infra.redis_cluster import AnyRedis, is_cluster_client

# How long a durable append waits for its replicas before it counts as failed.
REPLICA_WAIT_MS = 500


class NotReplicated(RedisError):
    """Fewer replicas than asked confirmed an append in time. The append counts as failed: an
    outbox row then stays and is relayed (deduplicated by its key if the append survived)."""


async def append_replicated(
    client: AnyRedis, script: AsyncScript, keys: list[str], args: list[str | int | bytes], replicas: int
) -> Any:
    """`script` (append.lua) on `keys`/`args`, then WAIT for `replicas`; the script's reply."""
    wait: dict[str, Any] = {}
    cluster = is_cluster_client(client)
    if cluster:
        wait["target_nodes"] = client.get_node_from_key(keys[0])  # type: ignore[union-attr]
    for _ in range(2):
        async with client.pipeline(transaction=False) as pipe:
            if cluster:  # (a cluster pipeline refuses EVALSHA; Redis caches the script by its hash)
                pipe.eval(script.script, len(keys), *keys, *args)  # type: ignore[arg-type]
            else:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, REPLICA_WAIT_MS, **wait)
            appended, acked = await pipe.execute(raise_on_error=False)
        if isinstance(appended, NoScriptError):  # a new master, its script cache empty
            await client.script_load(script.script)
            continue
        for result in (appended, acked):
            if isinstance(result, Exception):
                raise result
        if appended[0] == b"ok" and int(acked) < replicas:
            raise NotReplicated(f"{acked} of {replicas} replicas confirmed the append")
        return appended
    raise NotReplicated("the append script could not be loaded")
