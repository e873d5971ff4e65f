"""``python -m devtools.binance_exchange --port 8090``: serve the local exchange until
Ctrl-C, for demos against a worker configured with ``base_url = "http://127.0.0.1:8090"``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .server import BinanceExchangeServer


async def _serve(args: argparse.Namespace) -> None:
    server = BinanceExchangeServer(args.api_key, args.api_secret)
    server.exchange.market_fill_parts = args.fill_parts
    await server.start(args.host, args.port)
    print(f"local Binance exchange on {server.url} (api key {args.api_key!r})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.binance_exchange")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default="local-api-key")
    parser.add_argument("--api-secret", default="local-api-secret")
    parser.add_argument("--fill-parts", type=int, default=1,
                        help="fills per market order (partial fills)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
