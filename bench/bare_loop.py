"""The baseline of the throughput benchmark: XREADGROUP + XADD + XACK with no logic.

Same client library, batch size and stream layout as the worker, so the ratio between the
two is the cost of what the worker does per order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from producer.keys import GROUP, Keys


async def serve(url: str, batch: int, prefix: str) -> None:
    keys = Keys(prefix)
    r = aioredis.Redis.from_url(url, socket_timeout=10)
    with contextlib.suppress(ResponseError):
        await r.xgroup_create(keys.pending, GROUP, id="0", mkstream=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        reply: Any = await r.xreadgroup(GROUP, "bare", cast(Any, {keys.pending: ">"}),
                                        count=batch, block=1000)
        for _stream, entries in reply or []:
            pipe = r.pipeline(transaction=False)
            for entry_id, fields in entries:
                pipe.xadd(keys.completed, {"data": fields[b"data"], "request_id": entry_id})
            pipe.xack(keys.pending, GROUP, *[e for e, _ in entries])
            await pipe.execute()
    await r.aclose()


def arguments() -> argparse.ArgumentParser:
    """The loop's arguments (bench/writes_loop.py takes them too)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--prefix", default="orders")
    return parser


def main() -> None:
    args = arguments().parse_args()
    asyncio.run(serve(args.url, args.batch, args.prefix))


if __name__ == "__main__":
    main()
