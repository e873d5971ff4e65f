"""Async client for Python producers: publish place / cancel / cancel_all requests and wait
for their results.

It needs only redis and msgspec. Requests are checked against the contract before they are
sent, so a mistake is reported here, at the caller, instead of as a failed result later.
On a partitioned deployment (producer/partitions.py) each request goes to the partition of
its account, and its result is looked for there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple, cast, overload

import msgspec
import redis.asyncio as aioredis

from .components import MarketData, OrderComponent, Signal
from .connect import is_cluster, redis_client
from .contract import (
    Action,
    Algo,
    ContractError,
    Event,
    OrderStatus,
    OrderType,
    OtoTrigger,
    Request,
    Result,
    Side,
    TimeInForce,
    TrailingOffsetType,
    WireDecimal,
    decode_events,
    decode_order_status,
    decode_result,
    encode,
    parse_decimal,
)
from .ids import new_client_order_id
from .keys import DEFAULT_PREFIX, Keys, check_cluster_prefix
from .partitions import Deployment, UnknownAccount
from .replies import text as _text
from .signing import KEY_ID_FIELD, SIG_FIELD, sign
from .validation import check_request

# Results are looked for from a little before the request's own id: stream ids come from
# the Redis server clock, which a result never precedes, but allow for a clock step back.
_CLOCK_SLACK_MS = 5_000


class Submitted(NamedTuple):
    request_id: str
    client_order_id: str | None
    # The prefix of the partition the request went to: its request id is unique only there.
    # None on one made by hand, which only an unpartitioned client can wait for.
    prefix: str | None = None


def _opt_decimal(value: Decimal | str | int | None) -> WireDecimal | None:
    return None if value is None else parse_decimal(value)


def _field(fields: Mapping[Any, Any], name: str) -> Any:
    return fields.get(name.encode(), fields.get(name))


class OrderClient:
    """Publishes requests to ``<prefix>:pending`` and reads their results.

    Given ``key_id`` and ``secret`` (the producer key the workers know under that id), it
    signs every request: ``sig`` is the HMAC-SHA256 of the exact ``data`` bytes it writes,
    which carry ``issued_at`` (now, unless the request has its own) so that the workers can
    tell a fresh request from a replayed copy.

    Given a partitioned ``Deployment`` (``load_deployment`` of the workers' TOML file) instead
    of a prefix, it sends each request to ``{<prefix>-<n>}:pending`` of its account's
    partition ``n``; an account no partition holds is refused before anything is written.
    Request ids are then unique per partition only, so results are waited for by the
    ``Submitted`` that ``publish`` returned, which names the partition.

    On a Redis Cluster (``redis`` a RedisCluster, or ``from_url(..., cluster=True)``) the
    prefix must hold a hash tag (``{orders}``), as the workers' ``redis.prefix`` must; each
    partition's prefix holds one by construction.
    """

    def __init__(self, redis: aioredis.Redis, prefix: str | Deployment = DEFAULT_PREFIX, *,
                 key_id: str | None = None, secret: bytes | None = None) -> None:
        if (key_id is None) != (secret is None):
            raise ValueError("key_id and secret go together: both to sign, neither not to")
        deployment = prefix if isinstance(prefix, Deployment) else Deployment(prefix)
        # A Deployment built by hand has not been through deployment_of's check.
        deployment.partitions.check(deployment.prefix)
        if is_cluster(redis) and not deployment.partitions.enabled:
            try:
                check_cluster_prefix(deployment.prefix)
            except ValueError as exc:
                raise ValueError(f"prefix: {exc}") from None
        self.redis = redis
        self.deployment = deployment
        self._keys = {p: Keys(p) for p in deployment.prefixes()}
        self._key_id = key_id
        self._secret = secret

    @classmethod
    def from_url(cls, url: str, prefix: str | Deployment = DEFAULT_PREFIX, *,
                 key_id: str | None = None, secret: bytes | None = None,
                 cluster: bool = False) -> OrderClient:
        """A client of the Redis at ``url``; with ``cluster``, of the Redis Cluster whose
        node ``url`` names."""
        return cls(redis_client(url, cluster=cluster), prefix, key_id=key_id, secret=secret)

    @property
    def partitioned(self) -> bool:
        return self.deployment.partitions.enabled

    @property
    def keys(self) -> Keys:
        """The keys of an unpartitioned deployment; a partitioned one has one set per
        partition (``keys_for``)."""
        if self.partitioned:
            raise ValueError(
                f"deployment {self.deployment.prefix!r} has {self.deployment.partitions.count} "
                "partitions, each with its own keys: use keys_for(account)")
        return self._keys[self.deployment.prefix]

    def keys_for(self, account: str | None) -> Keys:
        """The keys of the partition holding ``account`` (``default`` for None); a
        ContractError naming the account when no partition holds it."""
        try:
            return self._keys[self.deployment.prefix_of(account)]
        except UnknownAccount as exc:
            raise ContractError(str(exc), "account") from None

    def __repr__(self) -> str:  # never the secret
        if self.partitioned:
            return (f"OrderClient(prefix={self.deployment.prefix!r}, "
                    f"partitions={self.deployment.partitions.count}, key_id={self._key_id!r})")
        return f"OrderClient(prefix={self.deployment.prefix!r}, key_id={self._key_id!r})"

    def entry(self, data: bytes) -> dict[str, bytes]:
        """The fields of a pending entry holding ``data``: signed when the client has a key."""
        fields = {"data": data}
        if self._key_id is not None and self._secret is not None:
            fields[KEY_ID_FIELD] = self._key_id.encode()
            fields[SIG_FIELD] = sign(self._secret, data).encode()
        return fields

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> OrderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def publish(self, request: Request) -> Submitted:
        now_ms = int(time.time() * 1000)
        check_request(request, now_ms=now_ms)
        keys = self.keys_for(request.account)
        if self._key_id is not None:
            if request.action is Action.PLACE and request.client_order_id is None:
                # The workers refuse it: a replayed copy would be a second order.
                raise ContractError("a signed place needs a client_order_id",
                                    "client_order_id")
            if request.issued_at is None:
                # The workers refuse a signed request that is not fresh (a replayed copy).
                request = msgspec.structs.replace(request, issued_at=now_ms)
        fields: Any = self.entry(encode(request))
        entry_id = await self.redis.xadd(keys.pending, fields)
        return Submitted(_text(entry_id), request.client_order_id, keys.prefix)

    async def place_from(self, component: OrderComponent, market: MarketData,
                         signal: Signal | None) -> Submitted | None:
        """Publish the order ``component`` makes of ``signal`` in ``market``
        (``OrderComponent.order``: stamped with its name and version, checked); None when
        it makes none. Its client order id is derived from the decision, so publishing the
        same decision again is a ``duplicate``, not a second order."""
        request = component.order(market, signal)
        return None if request is None else await self.publish(request)

    async def place(
        self,
        symbol: str,
        side: Side | str,
        type: OrderType | str,
        quantity: Decimal | str | int | None,
        *,
        quote_quantity: Decimal | str | int | None = None,
        price: Decimal | str | int | None = None,
        stop_price: Decimal | str | int | None = None,
        stop_limit_price: Decimal | str | int | None = None,
        trailing_offset: Decimal | str | int | None = None,
        trailing_offset_type: TrailingOffsetType | str | None = None,
        activation_price: Decimal | str | int | None = None,
        limit_offset: Decimal | str | int | None = None,
        display_quantity: Decimal | str | int | None = None,
        time_in_force: TimeInForce | str | None = None,
        expire_at: int | None = None,
        client_order_id: str | None = None,
        account: str | None = None,
        deadline: int | None = None,
        strategy_id: str | None = None,
        signal_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        reduce_only: bool = False,
        take_profit: Decimal | str | int | None = None,
        stop_loss: Decimal | str | int | None = None,
        oto_trigger: OtoTrigger | str | None = None,
        algo: Algo | None = None,
    ) -> Submitted:
        """Place an order; with ``take_profit`` and/or ``stop_loss``, the entry of a
        contingent list whose exits the workers place as it fills (``oto_trigger``:
        ``full``, the default, once it has ended; ``partial`` on each fill); with ``algo``
        (a market or limit order), the parent of a TWAP / VWAP schedule whose child orders
        the workers send, e.g. ``Algo(strategy="twap", horizon_ms=600_000, slices=10)``:
        its one result comes when the schedule ends (``wait_result`` with a timeout past
        the horizon; ``watch`` the events for its progress)."""
        request = Request(
            action=Action.PLACE,
            client_order_id=client_order_id or new_client_order_id(symbol, side),
            account=account,
            symbol=symbol,
            side=Side(side),
            type=OrderType(type),
            quantity=_opt_decimal(quantity),
            quote_quantity=_opt_decimal(quote_quantity),
            price=_opt_decimal(price),
            stop_price=_opt_decimal(stop_price),
            stop_limit_price=_opt_decimal(stop_limit_price),
            trailing_offset=_opt_decimal(trailing_offset),
            trailing_offset_type=(None if trailing_offset_type is None
                                  else TrailingOffsetType(trailing_offset_type)),
            activation_price=_opt_decimal(activation_price),
            limit_offset=_opt_decimal(limit_offset),
            display_quantity=_opt_decimal(display_quantity),
            time_in_force=None if time_in_force is None else TimeInForce(time_in_force),
            expire_at=expire_at,
            deadline=deadline,
            strategy_id=strategy_id,
            signal_id=signal_id,
            metadata=metadata,
            reduce_only=reduce_only,
            take_profit=_opt_decimal(take_profit),
            stop_loss=_opt_decimal(stop_loss),
            oto_trigger=None if oto_trigger is None else OtoTrigger(oto_trigger),
            algo=algo,
        )
        return await self.publish(request)

    async def cancel(self, client_order_id: str, *, account: str | None = None) -> Submitted:
        return await self.publish(
            Request(action=Action.CANCEL, client_order_id=client_order_id, account=account)
        )

    async def amend(self, client_order_id: str, *, price: Decimal | str | int | None = None,
                    stop_price: Decimal | str | int | None = None,
                    quantity: Decimal | str | int | None = None,
                    account: str | None = None) -> Submitted:
        """Change a working order's price, stop price or total quantity (cancel-replace:
        the result names the new order, and the old one in ``cancelled``)."""
        return await self.publish(Request(
            action=Action.AMEND, client_order_id=client_order_id, account=account,
            price=_opt_decimal(price), stop_price=_opt_decimal(stop_price),
            quantity=_opt_decimal(quantity)))

    async def sl_tp(self, symbol: str, *, account: str | None = None,
                    stop_loss: Decimal | str | int | None = None,
                    take_profit: Decimal | str | int | None = None,
                    trailing_offset: Decimal | str | int | None = None,
                    trailing_offset_type: TrailingOffsetType | str | None = None,
                    close: OrderType | str | None = None) -> Submitted:
        """Set the stop-loss / take-profit of the position in ``symbol`` (``close``: market,
        the default, or limit); without any level, clear it."""
        return await self.publish(Request(
            action=Action.SL_TP, account=account, symbol=symbol,
            stop_loss=_opt_decimal(stop_loss), take_profit=_opt_decimal(take_profit),
            trailing_offset=_opt_decimal(trailing_offset),
            trailing_offset_type=(None if trailing_offset_type is None
                                  else TrailingOffsetType(trailing_offset_type)),
            type=None if close is None else OrderType(close)))

    async def cancel_all(
        self, *, symbol: str | None = None, account: str | None = None
    ) -> Submitted:
        return await self.publish(
            Request(action=Action.CANCEL_ALL, symbol=symbol, account=account)
        )

    async def wait_result(self, request_id: str | Submitted, timeout: float = 30.0) -> Result:
        """The result of one request; on a partitioned deployment pass the ``Submitted``
        that ``publish`` returned (see ``wait_results``)."""
        where = self._locate(request_id)
        return (await self._wait({where}, timeout))[where]

    @overload
    async def wait_results(self, request_ids: Iterable[str],
                           timeout: float = 30.0) -> dict[str, Result]: ...

    @overload
    async def wait_results(self, request_ids: Iterable[Submitted],
                           timeout: float = 30.0) -> dict[Submitted, Result]: ...

    async def wait_results(self, request_ids: Iterable[str] | Iterable[Submitted],
                           timeout: float = 30.0) -> dict[str, Result] | dict[Submitted, Result]:
        """Wait until every request has its result; TimeoutError names how many are missing.

        Results are keyed by what was passed: request ids, or the ``Submitted`` values that
        ``publish`` returned. A partitioned deployment needs the latter, since two partitions
        can hand out the same request id."""
        wanted = {item: self._locate(item) for item in request_ids}
        found = await self._wait(set(wanted.values()), timeout)
        keyed: dict[Any, Result] = {item: found[where] for item, where in wanted.items()}
        return keyed

    def _locate(self, request: str | Submitted) -> tuple[str, str]:
        """(prefix, request id) of a request to wait for; ValueError when it is ambiguous or
        not of this deployment."""
        if isinstance(request, str):
            if self.partitioned:
                raise ValueError(
                    f"request id {request} is ambiguous: request ids are unique per partition "
                    "only; pass the Submitted that publish returned")
            return self.deployment.prefix, request
        prefix = request.prefix
        if prefix is None:
            if self.partitioned:
                raise ValueError(f"request {request.request_id} names no partition (a "
                                 "Submitted made by hand): pass the one publish returned")
            prefix = self.deployment.prefix
        if prefix not in self._keys:
            raise ValueError(f"request {request.request_id} went to {prefix!r}, which is not "
                             f"a prefix of this client's deployment {self.deployment.prefix!r}")
        return prefix, request.request_id

    async def _wait(self, wanted: set[tuple[str, str]],
                    timeout: float) -> dict[tuple[str, str], Result]:
        found: dict[tuple[str, str], Result] = {}
        if not wanted:
            return found
        by_prefix: dict[str, set[str]] = {}
        for prefix, rid in wanted:
            by_prefix.setdefault(prefix, set()).add(rid)
        deadline = time.monotonic() + timeout
        reads = [self._read_results(self._keys[prefix], rids, deadline, found)
                 for prefix, rids in sorted(by_prefix.items())]
        if len(reads) == 1:
            await reads[0]
        else:
            # One read per partition: on a Redis Cluster each is in its own slot, and one
            # XREAD across slots is refused (CROSSSLOT).
            tasks = [asyncio.ensure_future(read) for read in reads]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        missing = len(wanted - found.keys())
        if missing:
            raise TimeoutError(f"{missing} of {len(wanted)} results not seen in {timeout}s")
        return found

    async def _read_results(self, keys: Keys, wanted: set[str], deadline: float,
                            found: dict[tuple[str, str], Result]) -> None:
        """Read one partition's result streams into ``found`` until each of ``wanted`` is
        there or ``deadline`` (monotonic) passes."""
        start_ms = max(min(int(rid.split("-")[0]) for rid in wanted) - _CLOCK_SLACK_MS, 0)
        cursors = {keys.completed: f"{start_ms}-0", keys.failed: f"{start_ms}-0"}
        seen: set[str] = set()
        while wanted - seen:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            block = max(1, min(int(left * 1000), 1_000))
            reply: Any = await self.redis.xread(cast(Any, cursors), count=1000, block=block)
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    cursors[_text(stream)] = _text(entry_id)
                    rid = _field(fields, "request_id")
                    if rid is not None and _text(rid) in wanted:
                        seen.add(_text(rid))
                        found[keys.prefix, _text(rid)] = decode_result(_field(fields, "data"))

    async def order(self, client_order_id: str, account: str | None = None
                    ) -> OrderStatus | None:
        """The order's current state, from its record (in the partition of ``account``, on a
        partitioned deployment); None when there is none (never made, or final for longer
        than the workers' ``order_ttl_ms``). Its every change is also an event
        (``follow(events=True)``). A request dead-lettered as ``poison`` after it made its
        order names the order in its result: this is how to learn its outcome (never place
        it again)."""
        keys = self.keys_for(account)
        raw: Any = await self.redis.hget(keys.order(client_order_id), "record")
        return None if raw is None else decode_order_status(raw)

    async def follow(
        self, *, results: bool = True, events: bool = False, since: str = "$",
        account: str | None = None, partition: int | None = None,
    ) -> AsyncIterator[tuple[str, Result | Event]]:
        """Yield (stream, item) for new results and/or events as they arrive. On a
        partitioned deployment it follows one partition: the one holding ``account``, or
        number ``partition``; every account of that partition is followed."""
        keys = self.partition_keys(account=account, partition=partition)
        names = [keys.completed, keys.failed] if results else []
        if events:
            names.append(keys.events)
        # "$" is resolved once: passed again on every read it would skip what arrived on one
        # stream while we were reading another.
        cursors = {name: await self._last_id(name) if since == "$" else since for name in names}
        while True:
            reply: Any = await self.redis.xread(cast(Any, cursors), count=500, block=1_000)
            for stream, entries in reply or []:
                name = _text(stream)
                for entry_id, fields in entries:
                    cursors[name] = _text(entry_id)
                    data = _field(fields, "data")
                    if data is None:
                        continue
                    if name == keys.events:
                        # One entry per write: its one event, or its several (event v2).
                        for event in decode_events(data):
                            yield name, event
                    else:
                        yield name, decode_result(data)

    def partition_keys(self, *, account: str | None = None,
                       partition: int | None = None) -> Keys:
        """The keys of one partition: the one holding ``account``, or number ``partition``;
        of an unpartitioned deployment, its one set. ValueError when that names none."""
        if account is not None and partition is not None:
            raise ValueError("name one partition: by account or by number, not both")
        if partition is not None:
            count = self.deployment.partitions.count
            if not self.partitioned:
                raise ValueError(f"partition {partition}: deployment "
                                 f"{self.deployment.prefix!r} is not partitioned")
            if not 0 <= partition < count:
                raise ValueError(f"partition {partition}: partitions are numbered 0 to "
                                 f"{count - 1}")
            return self._keys[self.deployment.prefixes()[partition]]
        if account is not None:
            return self.keys_for(account)
        if self.partitioned:
            raise ValueError(f"deployment {self.deployment.prefix!r} has "
                             f"{self.deployment.partitions.count} partitions: name one, by "
                             "account or by number")
        return self.keys

    async def _last_id(self, stream: str) -> str:
        last: Any = await self.redis.xrevrange(stream, count=1)
        return _text(last[0][0]) if last else "0-0"
