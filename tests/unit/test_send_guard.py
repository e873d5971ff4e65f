"""The send-token guard at the broker's door (executor/brokers/sending.py): an order goes
to the adapter only under a token its delivery holds; everything else is refused, never
sent, and never counted as the broker's failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from executor.brokers.base import BrokerError, BrokerOrder, BrokerStatus, SendRefused
from executor.brokers.sending import SEND_TOKENS, SendGuard
from executor.infra.store import NotDurable
from executor.safety.breaker import outcome_code
from producer.contract import OrderSpec, OrderType, Side, WireDecimal

SPEC = OrderSpec(account="a", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                 quantity=WireDecimal("1"))


class Adapter:
    account = "a"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def _report(self, cid: str) -> BrokerOrder:
        return BrokerOrder(client_order_id=cid, broker_order_id="b-" + cid, symbol="BTCUSDT",
                           status=BrokerStatus.NEW, quantity=WireDecimal("1"))

    async def submit(self, cid: str, spec: OrderSpec) -> BrokerOrder:
        self.sent.append(cid)
        return self._report(cid)

    async def submit_many(self, orders: Sequence[tuple[str, OrderSpec]]
                          ) -> list[BrokerOrder | BrokerError]:
        self.sent += [cid for cid, _ in orders]
        return [self._report(cid) for cid, _ in orders]


class Tokens:
    """infra/lua/send.lua's rules over a dict: pending orders only, first holder keeps it."""

    def __init__(self, states: Mapping[str, str]) -> None:
        self.states = dict(states)
        self.holders: dict[str, str] = {}

    async def take(self, tokens: Mapping[str, str]) -> list[int]:
        out = []
        for cid, token in tokens.items():
            if self.states.get(cid) != "pending_submit":
                out.append(-1)
            else:
                out.append(1 if self.holders.setdefault(cid, token) == token else 0)
        return out


async def test_only_the_holder_sends_and_its_retries_pass() -> None:
    adapter, tokens = Adapter(), Tokens({"c1": "pending_submit"})
    guard = SendGuard(adapter, tokens.take)  # type: ignore[arg-type]
    SEND_TOKENS.set({"c1": "first"})
    await guard.submit("c1", SPEC)
    await guard.submit("c1", SPEC)  # the same delivery again: its own retry
    SEND_TOKENS.set({"c1": "second"})
    with pytest.raises(SendRefused) as info:
        await guard.submit("c1", SPEC)
    assert info.value.why == "held" and outcome_code(info.value) == ""
    assert adapter.sent == ["c1", "c1"]


async def test_an_order_without_a_token_is_never_sent() -> None:
    adapter, tokens = Adapter(), Tokens({"c1": "pending_submit"})
    guard = SendGuard(adapter, tokens.take)  # type: ignore[arg-type]
    SEND_TOKENS.set(None)
    with pytest.raises(RuntimeError, match="without a send token"):
        await guard.submit("c1", SPEC)
    assert adapter.sent == [] and tokens.holders == {}


async def test_a_batch_sends_only_what_it_holds() -> None:
    adapter = Adapter()
    tokens = Tokens({"mine": "pending_submit", "theirs": "pending_submit", "done": "filled"})
    tokens.holders["theirs"] = "other"
    guard = SendGuard(adapter, tokens.take)  # type: ignore[arg-type]
    SEND_TOKENS.set({"mine": "t", "theirs": "t", "done": "t"})
    mine, theirs, done = await guard.submit_many(  # type: ignore[misc]
        [("mine", SPEC), ("theirs", SPEC), ("done", SPEC)])
    assert isinstance(mine, BrokerOrder) and mine.client_order_id == "mine"
    assert isinstance(theirs, SendRefused) and theirs.why == "held"
    assert isinstance(done, SendRefused) and done.why == "moved_on"
    assert adapter.sent == ["mine"]


async def test_not_durable_sends_nothing() -> None:
    adapter = Adapter()

    async def take(tokens: Mapping[str, str]) -> list[int]:
        raise NotDurable("WAIT 1 1000 answered 0")

    guard = SendGuard(adapter, take)  # type: ignore[arg-type]
    SEND_TOKENS.set({"c1": "t", "c2": "t"})
    answers = await guard.submit_many([("c1", SPEC), ("c2", SPEC)])  # type: ignore[misc]
    assert [a.why for a in answers if isinstance(a, SendRefused)] == ["not_durable"] * 2
    with pytest.raises(SendRefused, match="durable"):
        await guard.submit("c1", SPEC)
    assert adapter.sent == []


def test_a_guard_batches_only_where_its_adapter_does() -> None:
    class Single:
        account = "a"

    assert getattr(SendGuard(Single(), Tokens({}).take), "submit_many", None) is None  # type: ignore[arg-type]
    assert getattr(SendGuard(Adapter(), Tokens({}).take), "submit_many", None) is not None  # type: ignore[arg-type]
