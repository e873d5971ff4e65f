"""Script calls made side by side, sent in one round trip.

The risk step writes each account of a batch by its own script (a compare-and-set on that
account's state, with the orders it creates); a batch of eight accounts made eight round
trips one after the other, each costing the worker's process a send and a receive (about
150 to 250 us of its CPU on the 2-core bench machine) and the batch a wait. Its accounts
now run side by side (``coalescing``) and their calls, made in the same turn of the event
loop, go out in one pipeline: each script stays atomic by itself and is answered, or
fails, on its own, as if sent alone (ioredis calls this auto-pipelining).

Outside ``coalescing`` a call is the script's own call, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_coalescing: contextvars.ContextVar[Coalescer | None] = contextvars.ContextVar(
    "coalescing", default=None)


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: list[Any]
    args: list[Any]
    reply: asyncio.Future[Any]


class Coalescer:
    """The script calls of tasks that run side by side, one round trip for those made in
    the same turn of the event loop."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._queue: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.round_trips = 0  # pipelines sent (tests count them)

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
                   ) -> Any:
        loop = asyncio.get_running_loop()
        call = _Call(script, list(keys), list(args), loop.create_future())
        self._queue.append(call)
        if len(self._queue) == 1:
            # After the tasks already scheduled in this turn, which may make calls too.
            loop.call_soon(self._flush)
        return await call.reply

    def _flush(self) -> None:
        calls, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        # A caller cancelled before its call went out (the worker stopping): not sent, as
        # a call of its own would not have been.
        calls = [call for call in calls if not call.reply.done()]
        if not calls:
            return
        if len(calls) == 1:
            (call,) = calls
            await _answer(call, call.script(keys=call.keys, args=call.args))
            return
        self.round_trips += 1
        try:
            # EVALSHA itself: a cluster pipeline neither loads registered scripts nor has
            # an evalsha method, and a plain one checks SCRIPT EXISTS first, a round trip.
            async with self.redis.pipeline(transaction=False) as pipe:
                for call in calls:
                    pipe.execute_command("EVALSHA", call.script.sha, len(call.keys),
                                         *call.keys, *call.args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            # The connection failed: whether each script ran is unknown, as for a call sent
            # alone that failed so.
            for call in calls:
                _settle(call, exception=exc)
            return
        except BaseException:
            for call in calls:  # the sender cancelled (the loop ending): so are its callers
                call.reply.cancel()
            raise
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                # It ran nothing: the server lost its scripts (restart, failover). The
                # script's own call loads it and sends it again.
                await _answer(call, call.script(keys=call.keys, args=call.args))
            elif isinstance(reply, Exception):
                _settle(call, exception=reply)
            else:
                _settle(call, result=reply)


async def _answer(call: _Call, sent: Any) -> None:
    try:
        result = await sent
    except Exception as exc:
        _settle(call, exception=exc)
    except BaseException:
        call.reply.cancel()
        raise
    else:
        _settle(call, result=result)


def _settle(call: _Call, *, result: Any = None, exception: BaseException | None = None
            ) -> None:
    if call.reply.done():  # its caller was cancelled
        return
    if exception is not None:
        call.reply.set_exception(exception)
    else:
        call.reply.set_result(result)


@contextlib.contextmanager
def coalescing(coalescer: Coalescer) -> Iterator[None]:
    """Within this block (and the tasks started in it), ``run_script`` goes through
    ``coalescer``."""
    token = _coalescing.set(coalescer)
    try:
        yield
    finally:
        _coalescing.reset(token)


async def run_script(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """``script`` called with ``keys`` and ``args``: with its neighbours' calls where the
    caller runs in ``coalescing``, else on its own."""
    coalescer = _coalescing.get()
    if coalescer is None:
        return await script(keys=keys, args=args)
    return await coalescer.call(script, keys, args)
