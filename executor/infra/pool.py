"""A connection pool that hands out and takes back connections without redis-py's per-command
bookkeeping.

redis-py's asyncio pool takes a connection from its list and puts it back around every
command, and each time also takes an asyncio lock, goes through a deprecation wrapper,
records the pool's connection counts for OpenTelemetry (three awaits per command, whether
or not any meter reads them) and dispatches a "connection released" event (for credential
providers that re-authenticate: the worker's credentials are fixed). That was 15-18% of
the CPU of a command's round trip through the worker's client (``python -m
bench.client``). Here the list operations are made as redis-py makes them, in one step
of the event loop (so the lock guards nothing), and the checks that keep a connection
safe to reuse are redis-py's own: ``ensure_connection`` (connected, nothing left in its
read buffer) on the way out and ``should_reconnect`` on the way back. A command
cancelled while it waits for its reply disconnects its connection, as with redis-py's
pool (tests/integration/test_lean_pool.py).

Only redis-py's plain ``ConnectionPool`` is made lean: a subclass (the blocking pool,
which waits for a free connection) keeps its own behaviour.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool


class LeanPool(ConnectionPool):
    async def get_connection(self, command_name: Any = None, *keys: Any,
                             **options: Any) -> AbstractConnection:
        connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)


def use_lean_pool(client: aioredis.Redis) -> aioredis.Redis:
    """Make ``client``'s pool a ``LeanPool`` (before its first command). A cluster client
    (a pool per node, made as nodes are found) and any other pool class are left as they
    are."""
    pool = getattr(client, "connection_pool", None)
    if type(pool) is ConnectionPool:
        pool.__class__ = LeanPool
    return client
