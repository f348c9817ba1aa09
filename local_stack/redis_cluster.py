"""A Redis Cluster on loopback ports from Debian's `redis-server`, for tests, `make dev` and bench.

Each node is a `redis-server --cluster-enabled yes` child process; `redis-cli --cluster create`
assigns the 16384 hash slots across the primaries (and pairs replicas when asked). Ready means
every node reports `cluster_state:ok`.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from local_stack import processes


def _node_port() -> int:
    """A free port P whose bus port P + 10000 is free too (Redis needs P <= 55535)."""
    for _ in range(200):
        port = random.randint(20000, 55535)  # noqa: S311 (picking a port, not a secret)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise processes.ServiceStartError("redis-cluster", "no free port pair (P, P + 10000) found")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class LocalRedisCluster:
    """`primaries` primaries with `replicas` replicas each, all on free loopback ports."""

    primaries: int = 3
    replicas: int = 0
    data_dir: Path | None = None
    log_dir: Path | None = None
    nodes: list[processes.Service] = field(default_factory=list)
    #: More redis-server arguments for every node (e.g. a command renamed away).
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """A URL naming one node: clients discover the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise processes.ServiceStartError(
                "redis-cluster", "redis-server/redis-cli not installed (make bootstrap installs them)"
            )
        data_dir = self.data_dir or Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        try:
            for _ in range(self.primaries * (1 + self.replicas)):
                port = _node_port()
                node_dir = data_dir / str(port)
                node_dir.mkdir(parents=True, exist_ok=True)
                argv = [
                    binary,
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "2000",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(node_dir),
                    "--daemonize", "no",
                    "--loglevel", "warning",
                    *self.extra_args,
                ]  # fmt: skip
                log_path = self.log_dir / f"redis-cluster-{port}.log" if self.log_dir else None
                node = processes.Service(f"redis-cluster-{port}", argv, port, log_path)
                self.nodes.append(node)
                node.start(timeout)
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if created.returncode != 0:
                raise processes.ServiceStartError("redis-cluster", created.stdout[-500:] + created.stderr)
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._state(port) == "ok" for port in self.ports):
                return
            time.sleep(0.1)
        raise processes.ServiceStartError("redis-cluster", f"cluster_state not ok within {timeout:.0f}s")

    @staticmethod
    def _state(port: int) -> str:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            info = client.cluster("info")
        return str(info.get("cluster_state", "")) if isinstance(info, dict) else ""

    def primary_ports(self) -> list[int]:
        return [port for port in self.ports if self._role(port) == "master"]

    def fail_over(self, primary_port: int, timeout: float = 90.0) -> int:
        """Promote a replica of the primary on `primary_port` (`CLUSTER FAILOVER`: coordinated, the
        replica catches up first, so no acknowledged write is lost); returns the new primary's port
        once every node agrees the cluster is ok again. A manual failover that cannot finish within
        Redis's own limit (5 s; a loaded machine) is dropped by Redis, so it is asked again."""
        replica = next(
            (p for p in self.ports if p != primary_port and self._master_port(p) == primary_port), None
        )
        if replica is None:
            raise processes.ServiceStartError("redis-cluster", f"no replica of 127.0.0.1:{primary_port}")
        deadline = time.monotonic() + timeout
        asked_at = 0.0
        while time.monotonic() < deadline:
            if self._role(replica) == "master" and self._role(primary_port) == "slave":
                self._wait_ok(max(1.0, deadline - time.monotonic()))
                return replica
            if time.monotonic() - asked_at > 10:
                with redis.Redis(host="127.0.0.1", port=replica) as client:
                    client.execute_command("CLUSTER", "FAILOVER")
                asked_at = time.monotonic()
            time.sleep(0.1)
        raise processes.ServiceStartError(
            "redis-cluster", f"failover of {primary_port} not done in {timeout:.0f}s"
        )

    def migrate_slot(self, slot: int, to_port: int) -> int:
        """Move one hash slot, keys and all, to the primary on `to_port` (what `redis-cli --cluster
        reshard` does for each slot); returns the port that owned it. Every node is told the new
        owner at once rather than by gossip."""
        with redis.Redis(host="127.0.0.1", port=to_port, decode_responses=True) as target:
            to_id = str(target.execute_command("CLUSTER", "MYID"))
            owner = next(
                int(start_end_nodes[2][1])
                for start_end_nodes in target.execute_command("CLUSTER", "SLOTS")
                if int(start_end_nodes[0]) <= slot <= int(start_end_nodes[1])
            )
            with redis.Redis(host="127.0.0.1", port=owner, decode_responses=True) as source:
                from_id = str(source.execute_command("CLUSTER", "MYID"))
                target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", from_id)
                source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", to_id)
                while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                    source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
            for port in [to_port, owner, *(p for p in self.primary_ports() if p not in (to_port, owner))]:
                with redis.Redis(host="127.0.0.1", port=port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", to_id)
        return owner

    @staticmethod
    def _role(port: int) -> str:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            return str(client.info("replication").get("role", ""))

    @staticmethod
    def _master_port(port: int) -> int | None:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            info = client.info("replication")
        return int(info["master_port"]) if info.get("role") == "slave" else None

    def flush(self) -> None:
        """Empty every primary (FLUSHALL goes to one node only)."""
        for port in self.ports:
            with redis.Redis(host="127.0.0.1", port=port) as client:
                if client.info("replication").get("role") == "master":
                    client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
