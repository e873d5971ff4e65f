"""``python -m devtools.alpaca_exchange --port 8091``: serve the local Alpaca API until
Ctrl-C, for demos against a worker configured with ``base_url = "http://127.0.0.1:8091"``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .server import AlpacaExchangeServer


async def _serve(args: argparse.Namespace) -> None:
    server = AlpacaExchangeServer(args.key_id, args.secret)
    await server.start(args.host, args.port)
    print(f"local Alpaca API on {server.url} (key id {args.key_id!r})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.alpaca_exchange")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--key-id", default="local-key-id")
    parser.add_argument("--secret", default="local-secret-key")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
