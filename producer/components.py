"""Order components: the part of strategy code that turns market data and a signal into one
order request, checked against the wire contract before it can reach Redis.

A component subclasses ``OrderComponent``, names itself (``name``, ``version``) and
implements ``generate_order``. Callers use ``order`` (or ``OrderClient.place_from``), which
stamps the component's name and version into the request's ``metadata``, so that they come
back on its result, its order record and its ``created`` event; gives the request a client
order id derived from the decision when it has none, so that the same decision published
again is a ``duplicate`` and never a second order; and refuses, naming the field, whatever
the workers would refuse.

Amounts are exact: a float anywhere (market data, a signal and its data, the request and its
metadata) is refused, since a binary float cannot hold most decimal prices.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from .contract import (
    MAX_DEPTH,
    MAX_TAG_LENGTH,
    Action,
    ContractError,
    Request,
    Side,
    decode_request,
    encode,
)
from .ids import client_order_id_for_key
from .validation import check_request

COMPONENT_KEY = "component"
VERSION_KEY = "component_version"
# The workers' default max_request_bytes (docs/wire-contract.md, "Limits on input"); for a
# deployment with another, set OrderComponent.max_request_bytes to it.
DEFAULT_MAX_REQUEST_BYTES = 65_536
# Short enough to read in a result and to index on in the SQL archive's JSON.
_IDENTITY = {"name": re.compile(r"[A-Za-z0-9_.-]{1,64}"),
             "version": re.compile(r"[A-Za-z0-9_.+-]{1,32}")}


def require_decimals(owner: object, *names: str, positive: bool = True) -> None:
    """Refuse any of ``owner``'s attributes ``names`` that is set (not None) and is not a
    finite Decimal (TypeError), or, with ``positive``, is not above zero (ValueError); the
    message names the attribute. For the amounts of components' inputs and configurations."""
    kind = type(owner).__name__
    for name in names:
        value = getattr(owner, name)
        if value is None:
            continue
        if isinstance(value, float):
            raise TypeError(f"{kind}.{name} is a float ({value!r}): amounts are Decimal, never "
                            "float (Decimal('0.1') is 0.1; Decimal(0.1) is not)")
        if not isinstance(value, Decimal) or not value.is_finite():
            raise TypeError(f"{kind}.{name} must be a finite Decimal, got {value!r}")
        if positive and value <= 0:
            raise ValueError(f"{kind}.{name} must be positive, got {value}")


def float_in(value: object) -> str | None:
    """Where the first float in ``value`` is (``""`` for ``value`` itself, ``.key`` or
    ``[i]`` steps into dicts, lists and tuples), None when there is none. Walks no deeper
    than the contract's nesting limit, so a cycle cannot keep it going: the contract refuses
    what is deeper (``check_depth``)."""
    stack: list[tuple[str, object, int]] = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, float):
            return path
        if depth > MAX_DEPTH:
            continue
        if isinstance(item, Mapping):
            stack.extend((f"{path}.{key}", child, depth + 1) for key, child in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(item))
    return None


class MarketData(msgspec.Struct, frozen=True, kw_only=True):
    """The market a component decides in: the best ``bid`` and ``ask`` of ``symbol`` and,
    when known, the ``last`` trade price, as of ``at`` (epoch ms)."""

    symbol: str
    bid: Decimal
    ask: Decimal
    at: int
    last: Decimal | None = None

    def __post_init__(self) -> None:
        require_decimals(self, "bid", "ask", "last")
        if isinstance(self.at, bool) or not isinstance(self.at, int) or self.at < 0:
            raise TypeError(f"MarketData.at must be epoch ms (an int >= 0), got {self.at!r}")

    def price(self, side: Side) -> Decimal:
        """What a market order on ``side`` would pay now: the ask for a buy, the bid for a
        sell."""
        return self.ask if side == Side.BUY else self.bid


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """What a strategy wants: a ``side`` and, as it knows them, how strongly
    (``strength``), where to enter (``entry``), where it is wrong (``stop``) and where it
    takes profit (``target``); ``data`` for anything else (no floats).

    ``id`` becomes the request's ``signal_id`` (at most 128 characters) and, with the
    component's name, its client order id: one order per component and signal."""

    id: str
    side: Side
    strength: Decimal | None = None
    entry: Decimal | None = None
    stop: Decimal | None = None
    target: Decimal | None = None
    data: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 0 < len(self.id) <= MAX_TAG_LENGTH:
            raise ValueError(f"Signal.id must be 1 to {MAX_TAG_LENGTH} characters, got "
                             f"{self.id!r:.60}")
        Side(self.side)  # a ValueError naming the value for anything but buy and sell
        require_decimals(self, "entry", "stop", "target")
        require_decimals(self, "strength", positive=False)
        where = float_in(self.data)
        if where is not None:
            raise TypeError(f"Signal.data{where} is a float: give a Decimal or a string")


class OrderComponent(abc.ABC):
    """Strategy code that decides orders. A subclass sets the class attributes ``name`` and
    ``version`` (``[A-Za-z0-9_.-]{1,64}``, ``[A-Za-z0-9_.+-]{1,32}``, checked when the class
    is made) and implements ``generate_order``; it takes its configuration however it
    likes, in its own ``__init__``."""

    name: ClassVar[str]
    version: ClassVar[str]
    max_request_bytes: ClassVar[int] = DEFAULT_MAX_REQUEST_BYTES

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # At import, where they are set: a bad name fails before any signal comes.
        for attr in _IDENTITY:
            if attr in cls.__dict__:
                _check_identity(cls, attr)

    @abc.abstractmethod
    def generate_order(self, market: MarketData, signal: Signal | None) -> Request | None:
        """The place request for ``signal`` in ``market``, or None for no order. Leave
        ``client_order_id`` out (``order`` derives one from the decision) unless the
        strategy keeps its own ids."""

    def order(self, market: MarketData, signal: Signal | None) -> Request | None:
        """``generate_order``'s request as the workers will read it: stamped with this
        component's name and version in ``metadata`` (and with ``signal.id`` as its
        ``signal_id`` unless it has one), given a client order id derived from the decision
        unless it has one, and checked; None for no order. A ContractError names the field
        the workers would refuse (``metadata`` when the component set the stamp's keys to
        anything else, or when the request is too large or too deep with it); a TypeError
        says where a float is."""
        for attr in _IDENTITY:
            _check_identity(type(self), attr)
        request = self.generate_order(market, signal)
        if request is None:
            return None
        for field in request.__struct_fields__:
            where = float_in(getattr(request, field))
            if where is not None:
                raise ContractError(f"{field}{where} is a float: amounts are decimals, never "
                                    "floats (wire(Decimal('0.1')))", field)
        if request.action is not Action.PLACE:
            raise ContractError(f"a component places orders: action must be place, not "
                                f"{request.action}", "action")
        request = self._stamped(request, market, signal)
        check_request(request)
        return self._as_read(request)

    def _stamped(self, request: Request, market: MarketData, signal: Signal | None) -> Request:
        metadata = dict(request.metadata or {})
        for key, value in ((COMPONENT_KEY, self.name), (VERSION_KEY, self.version)):
            if metadata.setdefault(key, value) != value:
                raise ContractError(f"metadata.{key} is {metadata[key]!r}: the stamp of "
                                    f"component {self.name} {self.version} would change it "
                                    f"to {value!r}", "metadata")
        changes: dict[str, Any] = {"metadata": metadata}
        if request.signal_id is None and signal is not None:
            changes["signal_id"] = signal.id
        if request.client_order_id is None and request.symbol and request.side:
            # Everything that tells one decision from another: the same component acting on
            # the same signal (or, without one, the same market data) for the same account
            # and order is the same decision, however often it is published.
            decision = signal.id if signal is not None else f"{market.symbol}@{market.at}"
            key = "\n".join((self.name, request.account or "default", request.symbol,
                             request.side, "signal" if signal is not None else "market",
                             decision))
            changes["client_order_id"] = client_order_id_for_key(request.symbol,
                                                                 request.side, key)
        return msgspec.structs.replace(request, **changes)

    def _as_read(self, request: Request) -> Request:
        """The request decoded from its own encoding, as a worker decodes it: so the
        limits on input (size, nesting, numbers in ``metadata``) and the field types and
        patterns, which a Struct built in Python never checks, hold here already."""
        try:
            data = encode(request)
        except (RecursionError, TypeError, AttributeError, ValueError,
                msgspec.EncodeError) as exc:
            # The other fields are typed flat values: only metadata can hold itself, nest
            # past the recursion limit or hold an object JSON cannot carry.
            raise ContractError(f"metadata cannot be encoded as JSON: {exc!r:.200}",
                                "metadata") from None
        if len(data) > self.max_request_bytes:
            raise ContractError(f"the request is {len(data)} bytes with its metadata, over "
                                f"the workers' limit of {self.max_request_bytes}", "metadata")
        return decode_request(data)


def _check_identity(cls: type, attr: str) -> None:
    value = getattr(cls, attr, None)
    if not isinstance(value, str) or not _IDENTITY[attr].fullmatch(value):
        raise TypeError(f"{cls.__name__}.{attr} must match {_IDENTITY[attr].pattern}, got "
                        f"{value!r:.80}")
