"""The bare loop that also writes, for each order it takes, the records an order of the
worker writes (bench/floor.py): the floor of what an order costs, without the worker's logic.

Per batch: XREADGROUP, then in one round trip each order's writes in one MULTI (``--lua``: in
one script call) and the XACK. The writes are those of one order as the worker wrote them
(``--writes FILE``, made by bench/floor.py): the same commands and the same bytes, only the
keys, client ids and request ids made each order's own, so that every order adds its own
records as the worker's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from executor.infra.packing import use_c_packing
from executor.infra.pool import use_lean_pool
from producer.keys import GROUP, Keys

from .bare_loop import arguments

# Placeholders in a command of the writes file: the order's key, client id and request id.
KEY, CID, RID = "{key}", "{cid}", "{rid}"

# One script runs every order's commands, given in its arguments as they come: per command
# its argument count then its arguments. Only what any script must do (take the bytes in as
# Lua strings, hand them to redis.call), none of the worker scripts' checks.
SCRIPT = """
local i, n = 1, #ARGV
while i <= n do
  local count = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
return 1
"""

Command = list[str]


def order_commands(writes: Sequence[Command], keys: Keys, cid: str, rid: str
                   ) -> list[list[str]]:
    """``writes`` made the order's own: its key, client id and request id in place of the
    placeholders (whole arguments only: the records' JSON stays as written)."""
    values = {KEY: keys.order(cid), CID: cid, RID: rid}
    return [[values.get(arg, arg) for arg in command] for command in writes]


def script_args(commands: Sequence[Sequence[str]]) -> list[Any]:
    args: list[Any] = []
    for command in commands:
        args.append(len(command))
        args.extend(command)
    return args


async def serve(url: str, batch: int, prefix: str, writes: Sequence[Command],
                lua: bool) -> None:
    keys = Keys(prefix)
    # The worker's client: its packing and its pool, so the loop's CPU is what the same
    # bytes cost the worker's process to send.
    r = use_c_packing(use_lean_pool(aioredis.Redis.from_url(url, socket_timeout=10)))
    with contextlib.suppress(ResponseError):
        await r.xgroup_create(keys.pending, GROUP, id="0", mkstream=True)
    sha = await r.script_load(SCRIPT)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        reply: Any = await r.xreadgroup(GROUP, "floor", cast(Any, {keys.pending: ">"}),
                                        count=batch, block=1000)
        for _stream, entries in reply or []:
            commands = [command for entry_id, _ in entries
                        for command in order_commands(writes, keys,
                                                      f"floor-{entry_id.decode()}",
                                                      entry_id.decode())]
            # One round trip a batch, as the bare loop's: the writes, then the ack.
            pipe = r.pipeline(transaction=not lua)
            if lua:
                pipe.evalsha(sha, 0, *script_args(commands))
            else:
                for command in commands:
                    pipe.execute_command(*command)
            pipe.xack(keys.pending, GROUP, *[e for e, _ in entries])
            await pipe.execute()
    await r.aclose()


def main() -> None:
    parser = arguments()
    parser.add_argument("--writes", type=Path, required=True,
                        help="JSON: the commands of one order (bench/floor.py)")
    parser.add_argument("--lua", action="store_true", help="one script call a batch")
    args = parser.parse_args()
    writes = json.loads(args.writes.read_text())
    asyncio.run(serve(args.url, args.batch, args.prefix, writes, args.lua))


if __name__ == "__main__":
    main()
