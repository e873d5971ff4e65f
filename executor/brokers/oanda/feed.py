"""The push feed of an OANDA account: its transactions stream (I/O here, the line logic in
stream.py).

``updates`` opens ``GET {stream host}/v3/accounts/{id}/transactions/stream`` and yields a
report for every ORDER_FILL and ORDER_CANCEL of an order with a client id, looked up by
the broker (one GET of the order: the transaction itself is known). On every (re)connect,
and whenever a heartbeat names a transaction not seen, the gap is healed from
``GET .../transactions/sinceid?id=<last seen>``; the cursor makes a transaction told by
both count once. The first cursor is the account's ``lastTransactionID`` at start.

A stream that cannot be opened, ends, or stays silent for ``stream_timeout_ms`` (OANDA
sends a heartbeat every 5 s) raises ``FeedBroken``: told by ``StreamHealth`` (the
``orderstream_broker_stream_up`` gauge and failure counter, a log line at a low rate); the
tracker polls and calls ``updates`` again, which first waits out a doubling backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from ..base import BrokerError, BrokerOrder, FeedBroken
from ..stream_health import Backoff, StreamHealth
from . import stream, wire

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

# Pages of transactions/sinceid read in one heal at most (the tracker's sweep after a
# broken feed covers a longer gap).
_HEAL_PAGES = 20

Request = Callable[..., Awaitable[dict[str, Any]]]
Report = Callable[[str, Mapping[str, Any]], Awaitable[BrokerOrder | None]]


class TransactionsFeed:
    def __init__(self, account: str, timeout_ms: int, request: Request, report: Report,
                 metrics: Metrics | None = None) -> None:
        self.account = account
        self.timeout_ms = timeout_ms
        self.cursor = stream.Cursor()
        self.backoff = Backoff()
        self.health = StreamHealth(account, metrics, logger=log,
                                   what=f"oanda {account}: transactions stream")
        self._request = request  # the broker's REST call (sinceid)
        self._report = report  # the broker's lookup of one order, given a transaction

    async def updates(self, session: aiohttp.ClientSession | None,
                      url: str) -> AsyncIterator[BrokerOrder]:
        await asyncio.sleep(self.backoff.delay())
        if session is None:
            raise self._lost("not started (or closed)")
        # No total timeout: silence is measured between lines (stream_timeout_ms).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_ms / 1000)
        try:
            async with session.get(url, timeout=timeout) as response:
                if response.status >= 300:
                    raw = await response.read()
                    raise self._lost(wire.describe(response.status, _body(raw)))
                self.health.up()
                self.backoff.reset()
                async for report in self._heal():
                    yield report
                async for report in self._read(response):
                    yield report
        except FeedBroken:
            self.backoff.failed()
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.backoff.failed()
            # Named by its type only: its text can carry the URL (the account id).
            raise self._lost(f"connection failed ({type(exc).__name__})") from None

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[BrokerOrder]:
        while True:
            try:
                line = await asyncio.wait_for(response.content.readline(),
                                              self.timeout_ms / 1000)
            except TimeoutError:
                raise self._lost(f"no heartbeat for {self.timeout_ms} ms") from None
            if not line:
                raise self._lost("closed by the server")
            message = stream.parse_line(line)
            if message is None:
                continue
            if message.get("type") == stream.HEARTBEAT:
                if self.cursor.behind(message):
                    async for report in self._heal():
                        yield report
                continue
            if self.cursor.fresh(message):
                found = await self._change(message)
                if found is not None:
                    yield found

    async def _heal(self) -> AsyncIterator[BrokerOrder]:
        """The transactions after the cursor (missed while disconnected), page by page."""
        for _ in range(_HEAL_PAGES):
            if self.cursor.last is None:
                return
            before = self.cursor.last
            try:
                reply = await self._request("GET", "/transactions/sinceid",
                                            params={"id": str(before)})
            except BrokerError as exc:
                raise self._lost(f"cannot read the transactions since {before} "
                                 f"({exc})") from None
            for tx in reply.get("transactions") or []:
                if isinstance(tx, dict) and self.cursor.fresh(tx):
                    found = await self._change(tx)
                    if found is not None:
                        yield found
            if self.cursor.last == before:
                return

    async def _change(self, tx: Mapping[str, Any]) -> BrokerOrder | None:
        cid = stream.client_change(tx)
        if cid is None:
            return None
        try:
            return await self._report(cid, tx)
        except BrokerError as exc:
            log.info("oanda %s: order %s changed (%s) but cannot be looked up (%s); the "
                     "tracker's polling will", self.account, cid, tx.get("type"), exc)
            return None
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            log.warning("oanda %s: unreadable order %s skipped (%s: %s); the tracker's "
                        "polling covers it", self.account, cid, type(exc).__name__, exc)
            return None

    def _lost(self, why: str) -> FeedBroken:
        self.health.lost(why)
        return FeedBroken(f"oanda transactions stream: {why}", logged=True)


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        return {}
    return body if isinstance(body, dict) else {}
