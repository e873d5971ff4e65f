"""Commands packed in C and sent at once: redis-py's asyncio connections, with hiredis doing
the packing, and no task made to send each command.

redis-py's asyncio connection packs every argument in Python, about a microsecond each, and
the worker's scripts take one key per order, so packing was a visible share of an order's
cost. hiredis (installed with redis-py for parsing) packs the same bytes in C; the sync
redis-py client already uses it this way.

Only what both pack alike takes the C path: str and int arguments. Bytes (the JSON records
and events) are framed here and sent as they are: hiredis copies every byte it packs,
slowly, and redis-py's transport joins the pieces anyway. Anything else (floats, whose
text could differ; bools and objects, which redis-py refuses with its own error) goes
through redis-py's packer unchanged.

With a socket timeout (the worker always has one), redis-py sends every command through
``asyncio.wait_for``, which on Python 3.11 makes a task per command and sends it a turn of
the event loop later: on the 2-core bench machine a GET cost 240-350 us of CPU that way
against 140-180 us without (``python -m bench.client``). Writing to the transport never
waits (it takes what the socket does not, into its buffer); only draining a full buffer
does, so that is what the timeout bounds here, as redis-py's does, with the same errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def pack(args: tuple[Any, ...]) -> list[bytes] | None:
    """The RESP bytes of one command, or None where redis-py must pack it."""
    name = args[0]
    # A command name with a space ("SCRIPT LOAD") is several arguments, as redis-py has it.
    if isinstance(name, str):
        args = (*name.encode().split(), *args[1:])
    elif isinstance(name, bytes) and b" " in name:
        args = (*name.split(), *args[1:])
    chunks: list[bytes] = [b"*%d\r\n" % len(args)]
    start = 0
    for i, arg in enumerate(args):
        kind = type(arg)
        if kind is bytes:
            _pack_run(args[start:i], chunks)
            chunks += (b"$%d\r\n" % len(arg), arg, b"\r\n")
            start = i + 1
        elif kind is not str and kind is not int:
            return None
    _pack_run(args[start:], chunks)
    return chunks


def _pack_run(run: tuple[Any, ...], chunks: list[bytes]) -> None:
    if run:
        packed = hiredis.pack_command(run)
        # hiredis packs a whole command: drop its "*<count>" line, the count is ours.
        chunks.append(packed[packed.index(b"\n") + 1:])


class _CPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        packed = pack(args)
        return packed if packed is not None else super().pack_command(*args)

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        # A pipeline's commands, their pieces as they are: redis-py's joins the short ones
        # looping over every piece in Python (three a bytes argument here), which cost a
        # pipeline of the accounts' scripts (infra/coalesce.py) more than packing them;
        # the transport joins the pieces it is given in C.
        out: list[bytes] = []
        for command in commands:
            out += self.pack_command(*command)
        return out

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.socket_timeout or not self.is_connected or not isinstance(command, list):
            await super().send_packed_command(command, check_health)
            return
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        writer = self._writer
        if writer is None:  # the health check lost the connection: redis-py reconnects
            await super().send_packed_command(command, False)
            return
        try:
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                # The socket did not take it all: draining may wait, as long as redis-py's.
                await asyncio.wait_for(writer.drain(), self.socket_timeout)
            else:
                await writer.drain()  # returns at once, or raises a lost connection's error
        except TimeoutError:  # asyncio.wait_for's (an OSError too: caught first)
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else e.args[:2]
            raise RedisConnectionError(
                f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            # As redis-py: part of a command may be sent; the connection is of no more use.
            await self.disconnect(nowait=True)
            raise


_classes: dict[str, type[AbstractConnection]] = {}


def _fast(base: type[AbstractConnection]) -> type[AbstractConnection]:
    if issubclass(base, _CPacking):
        return base
    name = f"{base.__module__}.{base.__qualname__}"
    if name not in _classes:
        _classes[name] = type(f"CPacked{base.__name__}", (_CPacking, base), {})
    return _classes[name]


def use_c_packing(client: aioredis.Redis) -> aioredis.Redis:
    """Make ``client``'s future connections pack in C, whatever class its URL chose (plain,
    TLS, unix socket). Call before its first command. A cluster client (no pool: a pool per
    node, made as nodes are found) keeps redis-py's packing."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return client
    pool.connection_class = _fast(pool.connection_class)
    return client
