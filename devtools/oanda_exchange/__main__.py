"""``python -m devtools.oanda_exchange --port 8091``: serve the local OANDA venue until
Ctrl-C, for demos against a worker configured with ``base_url = "http://127.0.0.1:8091"``
and the token and account id printed here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .server import OandaExchangeServer


async def _serve(args: argparse.Namespace) -> None:
    server = OandaExchangeServer(args.token, args.account_id, currency=args.currency)
    await server.start(args.host, args.port)
    print(f"local OANDA venue on {server.url} (account {args.account_id}, token "
          f"{args.token!r})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.oanda_exchange")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--token", default="local-token")
    parser.add_argument("--account-id", default="101-004-1234567-001")
    parser.add_argument("--currency", default="USD", help="the account's home currency")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
