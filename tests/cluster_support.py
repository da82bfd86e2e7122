"""A real Redis Cluster for tests: 3 masters and 3 replicas (redis-server processes with
`cluster-enabled yes` on free loopback ports, joined by `redis-cli --cluster create`)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from .support import free_port, wait_for_port

# A short node timeout: a failover (and the tests) take seconds, not the default 15 s.
NODE_TIMEOUT_MS = 1000
READY_TIMEOUT_S = 30.0


@dataclass
class ClusterNode:
    port: int
    process: subprocess.Popen[bytes]
    command: list[str]

    def start(self) -> None:
        """(Again, after a kill: with its nodes.conf it rejoins, as a replica of whoever took over.)"""
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def info(self, section: str) -> dict[str, str]:
        with self.client() as client:
            text = client.execute_command("CLUSTER", "INFO" if section == "cluster" else section)
        text = text.decode() if isinstance(text, bytes) else str(text)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class RedisCluster:
    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis-server)")
        self.nodes: list[ClusterNode] = []
        for _ in range(masters * (1 + replicas)):
            port = free_port()
            directory = workdir / str(port)
            directory.mkdir()
            args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            # The bus port is set, not the default port + 10000 (which may be taken, or > 65535).
            cluster = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(free_port()),
            ]
            timeout = ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(directory)]
            command = [binary, *args, *cluster, *timeout]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.nodes.append(ClusterNode(port, process, command))
        for node in self.nodes:
            wait_for_port(node.port, process=node.process)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ready(masters * (1 + replicas))

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def wait_ready(self, known: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                infos = [node.info("cluster") for node in self.nodes if node.process.poll() is None]
                agreed = all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == known for i in infos)
                paired = agreed and all(self.replica_of(master) is not None for master in self.masters())
                if (
                    paired
                    and all(self.replicating(node) for node in self.nodes if "slave" in self._flags(node))
                    and all(self.replicas_online(master) for master in self.masters())
                ):
                    return
            time.sleep(0.1)
        raise TimeoutError("the Redis Cluster never became ready")

    def replicas_online(self, master: ClusterNode) -> bool:
        """Whether a write to the master is confirmed by its replica (`WAIT`). A replica's link
        is up before that: its master may still have it in `wait_bgsave`, and after the sync
        Redis 7 streams nothing to it (GETACK included) until the replica's first ACK, up to a
        second later (seen: the tests' first WAITs then got 0 of 1)."""
        ranges = [(low, high) for low, high, port in self.slot_ranges() if port == master.port]
        key = next(
            f"ready-{i}"
            for i in range(100_000)
            if any(low <= key_slot(f"ready-{i}".encode()) <= high for low, high in ranges)
        )
        with master.client() as client:
            client.set(key, "1", ex=60)
            return int(client.execute_command("WAIT", 1, 200)) >= 1

    def replicating(self, replica: ClusterNode) -> bool:
        """Whether a replica's link to its master is up (synced: WAIT counts it)."""
        with replica.client() as client:
            return client.info("replication").get("master_link_status") == "up"

    def _nodes_table(self) -> list[list[str]]:
        with self.nodes[0].client() as client:
            text = client.execute_command("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else str(text)
        return [line.split() for line in text.splitlines() if line.strip()]

    def masters(self) -> list[ClusterNode]:
        ports = {int(row[1].split(":")[1].split("@")[0]) for row in self._nodes_table() if "master" in row[2]}
        return [node for node in self.nodes if node.port in ports and "fail" not in self._flags(node)]

    def _flags(self, node: ClusterNode) -> str:
        for row in self._nodes_table():
            if int(row[1].split(":")[1].split("@")[0]) == node.port:
                return row[2]
        return ""

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) for every range a live master serves."""
        ranges = []
        for row in self._nodes_table():
            if "master" not in row[2] or "fail" in row[2]:
                continue
            port = int(row[1].split(":")[1].split("@")[0])
            for part in row[8:]:
                if not part.startswith("["):
                    low, _, high = part.partition("-")
                    ranges.append((int(low), int(high or low), port))
        return ranges

    def master_of_slot(self, slot: int) -> ClusterNode:
        port = next(port for low, high, port in self.slot_ranges() if low <= slot <= high)
        return next(node for node in self.nodes if node.port == port)

    def replica_of(self, master: ClusterNode) -> ClusterNode | None:
        table = self._nodes_table()
        master_id = next(row[0] for row in table if int(row[1].split(":")[1].split("@")[0]) == master.port)
        for row in table:
            if row[3] == master_id and "slave" in row[2] and "fail" not in row[2]:
                port = int(row[1].split(":")[1].split("@")[0])
                return next(node for node in self.nodes if node.port == port)
        return None

    def fail_over(self, master: ClusterNode, timeout_s: float = 20.0) -> ClusterNode:
        """A manual failover (CLUSTER FAILOVER on the master's replica): the replica catches up,
        the master stops taking writes, the replica becomes the master. Returns the new one."""
        replica = self.replica_of(master)
        assert replica is not None, "the master has no replica"
        with replica.client() as client:
            client.execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Done when the replica says so and the cluster's view (gossip) agrees.
            with contextlib.suppress(redis.RedisError), replica.client() as client:
                promoted = client.execute_command("ROLE")[0] in (b"master", "master")
                if promoted and "master" in self._flags(replica) and "slave" in self._flags(master):
                    return replica
            time.sleep(0.05)
        raise TimeoutError("the failover did not complete")

    def kill_master(self, master: ClusterNode, timeout_s: float = 20.0) -> ClusterNode:
        """SIGKILL a master; returns its replica once promoted (after the node timeout)."""
        replica = self.replica_of(master)
        assert replica is not None, "the master has no replica"
        master.process.kill()
        master.process.wait(10)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError), replica.client() as client:
                if client.execute_command("ROLE")[0] in (b"master", "master") and "master" in self._flags(replica):
                    return replica
            time.sleep(0.05)
        raise TimeoutError("no replica took over")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait(10)


@contextlib.contextmanager
def redis_cluster() -> Iterator[RedisCluster]:
    with tempfile.TemporaryDirectory() as workdir:
        cluster = RedisCluster(Path(workdir))
        try:
            yield cluster
        finally:
            cluster.stop()


def spread_prefix(cluster: RedisCluster, shards: int, stem: str) -> str:
    """A key prefix whose log shards' hash tags land on `shards` different masters."""
    ranges = cluster.slot_ranges()
    wanted = min(shards, len({port for _low, _high, port in ranges}))
    for attempt in range(10_000):
        prefix = f"{stem}{attempt}"
        slots = [key_slot(f"{{{prefix}:log{i}}}".encode()) for i in range(shards)]
        owners = {port for slot in slots for low, high, port in ranges if low <= slot <= high}
        if len(owners) == wanted:
            return prefix
    raise LookupError("no prefix spreads the shards")
