"""One way to open a Redis client, for a single server or a Redis Cluster."""

from __future__ import annotations

import os
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import (
    AbstractStrategy,
    ClusterPipeline,
    RedisCluster,
    TransactionStrategy,
)
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException

CLUSTER_ENV = "ORDERSTREAM_REDIS_CLUSTER"


def env_flag(value: str | None) -> bool:
    """An on/off environment variable: 1, true, yes or on (any case) is on."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class ClusterUnavailable(RedisConnectionError):
    """The Redis Cluster could not serve a command: no node reachable, or a slot no node
    covers (during a failover). redis-py raises those as ``RedisClusterException``, which is
    no ``RedisError``: as this one, the loops that wait out a Redis outage (and retry, or
    leave requests pending for redelivery) wait this out too, instead of ending."""


def _known_slot(client: RedisCluster, args: tuple[Any, ...]) -> int | None:
    """The slot of a command from what the client already knows (its table of commands
    and key positions), with no I/O; None where only redis-py's own way can tell."""
    if client._initialize:
        return None  # the table of commands is not loaded yet
    command = (args[0].decode() if isinstance(args[0], bytes) else str(args[0])).upper()
    if command in ("EVAL", "EVALSHA"):
        keys = list(args[3:3 + int(args[2])]) if len(args) > 2 else []
    elif command in ("XREAD", "XREADGROUP"):
        keys = stream_keys(command, args[1:]) or []
    else:
        spec: Any = client.commands_parser.commands.get(command.lower())
        if (spec is None or "movablekeys" in spec["flags"] or spec["first_key_pos"] <= 0
                or command in client.command_flags):
            return None
        last = spec["last_key_pos"]
        last = len(args) + last if last < 0 else last
        keys = [args[pos] for pos in range(spec["first_key_pos"], last + 1,
                                           max(spec["step_count"], 1))]
    slots = {client.keyslot(key) for key in keys}
    return slots.pop() if len(slots) == 1 else None


class _Transaction(TransactionStrategy):
    """MULTI on a cluster without a thread per command. redis-py 8.1 finds the slot of
    each command queued in a transaction by starting a thread that runs a new event loop
    (its key lookup is async, the queueing is not) and blocks ours until it ends: about
    0.3 ms per command, and the event loop stalled meanwhile. Where the slot is known
    without I/O, the command is queued as redis-py would queue it, here."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        immediate = self._watching or args[0] in self.IMMEDIATE_EXECUTE_COMMANDS
        if not immediate or self._explicit_transaction:
            slot = _known_slot(self._pipe.cluster_client, args)
            if slot is not None:
                self._pipeline_slots.add(slot)
                return AbstractStrategy.execute_command(self, *args, **kwargs)
        return super().execute_command(*args, **kwargs)


def dropped_mid_command(exc: AttributeError) -> bool:
    """Whether ``exc`` is redis-py losing a connection under a command: during a failover
    it can close a connection (its writer becomes None) between checking that it is
    connected and writing to it. Nothing was sent; it is a connection error, and the
    loops that wait out an outage must wait this out too, not end on it."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename.endswith(_REDIS_CONNECTION)


_REDIS_CONNECTION = os.path.join("redis", "asyncio", "connection.py")


class _ClusterPipeline(ClusterPipeline):
    def __init__(self, client: RedisCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        if transaction:
            self._execution_strategy = _Transaction(self)

    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc
        except AttributeError as exc:
            if not dropped_mid_command(exc):
                raise
            raise ClusterUnavailable(f"connection lost under a command ({exc})") from exc


def stream_keys(command: str, args: tuple[Any, ...]) -> list[Any] | None:
    """The streams an XREAD or XREADGROUP reads: the first half of what follows its
    STREAMS keyword, found as redis-server's xreadGetKeys finds it (past GROUP's two
    names and the options, so a group or consumer named "streams" is no keyword); None for
    any other command, or for one that does not parse (Redis answers it with its error)."""
    name = command.upper()
    if name not in ("XREAD", "XREADGROUP"):
        return None
    i = 3 if name == "XREADGROUP" else 0  # GROUP <group> <consumer>
    while i < len(args):
        arg = args[i]
        word = (arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)).upper()
        if word == "STREAMS":
            rest = args[i + 1:]
            if not rest or len(rest) % 2:
                return None
            return list(rest[:len(rest) // 2])
        i += 2 if word in ("COUNT", "BLOCK") else 1
    return None


class _SlotScript(AsyncScript):
    """A script of a cluster client that a node without it in its cache (a fresh node, a
    replica just promoted, a script first used) gets by EVAL, on the node of its keys'
    slot, which caches it there. redis-py's SCRIPT LOAD goes to every master instead: while
    one is down it fails, so every partition's first call of a script would fail with it."""

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        if client is not None:
            return await super().__call__(keys, args, client)  # a pipeline's
        keys, args = list(keys or ()), list(args or ())
        cluster = self.registered_client
        try:
            return await cluster.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await cluster.eval(cast(str, self.script), len(keys), *keys, *args)


class _Cluster(RedisCluster):
    """A RedisCluster whose failures are all ``RedisError`` (see ``ClusterUnavailable``)."""

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc
        except AttributeError as exc:
            if not dropped_mid_command(exc):
                raise
            raise ClusterUnavailable(f"connection lost under a command ({exc})") from exc

    async def _determine_slot(self, command: str, *args: Any) -> int:
        """The slot of an XREAD or XREADGROUP from its STREAMS, read here. redis-py asks
        one fixed node (``COMMAND GETKEYS``) for the keys of commands whose keys move,
        before every such call: a round trip more per read, and while that node is down
        every read fails, even of streams that live on healthy masters, so one master's
        failover would hold up every partition's workers."""
        keys = stream_keys(command, args)
        if keys is None:
            slot: int = await super()._determine_slot(command, *args)
            return slot
        slots = {self.keyslot(key) for key in keys}
        if len(slots) != 1:
            raise RedisClusterException(
                f"{command} - all keys must map to the same key slot")
        return slots.pop()

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        return _SlotScript(self, script)

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused: a bug of ours
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


def redis_client(url: str, *, cluster: bool = False, **options: Any) -> aioredis.Redis:
    """A client of the Redis at ``url``; with ``cluster``, of the Redis Cluster that ``url``
    names one node of (the client learns the others and follows slots as they move).

    RedisCluster is no subclass of Redis but has the same command methods, so callers keep
    one type; what a cluster runs differently (commands with no key, which must go to the
    node holding the deployment's slot) is routed where it is used (``home_node``)."""
    if cluster:
        return cast(aioredis.Redis, _Cluster.from_url(url, **options))
    return aioredis.Redis.from_url(url, **options)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


async def home_node(redis: aioredis.Redis, key: str) -> dict[str, Any]:
    """Keyword arguments that send a command with no key (WAIT, TIME, PING) to the node
    holding ``key``'s slot: on a cluster, what it says is about that node (WAIT counts the
    replicas of the writes made on the same connection; TIME is the clock that stamps that
    node's stream ids). None are needed on a single server."""
    cluster: object = redis  # typed as Redis everywhere (redis_client), may be a cluster
    if not isinstance(cluster, RedisCluster):
        return {}
    await cluster.initialize()  # the slot map, once (a no-op after the first command)
    return {"target_nodes": cluster.get_node_from_key(key)}
