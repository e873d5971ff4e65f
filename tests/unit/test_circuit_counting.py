"""The breaker counts a broker's answered calls without holding back their answers, and a
failure before its answer returns (brokers/circuit.py)."""

from __future__ import annotations

import asyncio

import pytest

from executor.brokers import circuit as circuit_module
from executor.brokers.base import BrokerOrder, BrokerStatus, RetryableError
from executor.brokers.circuit import SUCCESS_LINGER_S, CircuitBroker
from executor.safety.breaker import CircuitState, Verdict
from producer.contract import OrderSpec, OrderType, Side, WireDecimal

SPEC = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                 quantity=WireDecimal("1"))


class Exchange:
    account = "default"

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        if client_order_id.startswith("fail"):
            raise RetryableError("the exchange is down")
        return BrokerOrder(client_order_id=client_order_id, broker_order_id="B",
                           symbol=order.symbol, status=BrokerStatus.FILLED,
                           quantity=order.quantity)

    async def close(self) -> None:
        pass


class HeldBreaker:
    """A breaker whose counting waits until released; it opens on the first failure."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.counted: list[str] = []
        self.state: CircuitState | None = None

    def seen(self, account: str) -> CircuitState | None:
        return self.state

    async def record(self, account: str, outcomes: str) -> Verdict:
        await self.release.wait()
        self.counted.append(outcomes)
        state = self.state = CircuitState.OPEN if "F" in outcomes else CircuitState.CLOSED
        return Verdict(state, state is CircuitState.CLOSED, 0, "F" in outcomes)


def circuit() -> tuple[CircuitBroker, HeldBreaker]:
    breaker = HeldBreaker()
    return CircuitBroker(Exchange(), breaker), breaker  # type: ignore[arg-type]


async def test_answers_return_while_they_are_counted_in_call_order() -> None:
    broker, breaker = circuit()
    for cid in ("a", "b", "c"):
        # Returns although the breaker has not counted anything yet.
        assert (await asyncio.wait_for(broker.submit(cid, SPEC), 5)).client_order_id == cid
    assert breaker.counted == []
    breaker.release.set()
    await broker.close()
    assert "".join(breaker.counted) == "SSS"
    assert len(breaker.counted) <= 2  # what piled up while one counted went in one call


async def test_a_failure_is_counted_with_everything_before_it_before_it_returns() -> None:
    broker, breaker = circuit()
    await broker.submit("a", SPEC)
    failing = asyncio.create_task(broker.submit("fail-1", SPEC))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not failing.done()  # held until the breaker has counted it
    breaker.release.set()
    with pytest.raises(RetryableError):
        await failing
    assert "".join(breaker.counted) == "SF"
    # Not closed any more: the next answer is counted before it returns too.
    breaker.release.clear()
    ok = asyncio.create_task(broker.submit("b", SPEC))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not ok.done()
    breaker.release.set()
    await ok
    assert "".join(breaker.counted) == "SFS"
    await broker.close()


async def test_successes_of_a_linger_are_counted_in_one_call_and_close_counts_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_module, "SUCCESS_LINGER_S", 60.0)
    broker, breaker = circuit()
    breaker.release.set()
    for cid in ("a", "b", "c", "d"):
        await broker.submit(cid, SPEC)
        for _ in range(10):  # room for a count that did not linger to run
            await asyncio.sleep(0)
    assert breaker.counted == []  # still lingering: one call for all of them
    await asyncio.wait_for(broker.close(), 5)  # never waits the linger out
    assert breaker.counted == ["SSSS"]


async def test_lingering_successes_are_counted_without_a_close() -> None:
    broker, breaker = circuit()
    breaker.release.set()
    await broker.submit("a", SPEC)
    await broker.submit("b", SPEC)
    await asyncio.sleep(SUCCESS_LINGER_S * 1.5)
    for _ in range(100):  # a loaded machine's timer may be late
        if breaker.counted:
            break
        await asyncio.sleep(0.05)
    assert breaker.counted == ["SS"]
    await broker.close()


async def test_a_failure_counts_the_lingering_successes_first() -> None:
    broker, breaker = circuit()
    breaker.release.set()
    await broker.submit("a", SPEC)
    await broker.submit("b", SPEC)
    with pytest.raises(RetryableError):
        await broker.submit("fail-1", SPEC)
    assert breaker.counted == ["SSF"]  # at once, in call order, before the failure returned
    await broker.close()
    assert breaker.counted == ["SSF"]


async def test_a_trial_granted_to_this_process_is_counted_before_its_answer_returns() -> None:
    broker, breaker = circuit()
    breaker.state = CircuitState.HALF_OPEN  # what the gate's allow found: this is the trial
    ok = asyncio.create_task(broker.submit("a", SPEC))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not ok.done()  # held until the breaker has counted it
    breaker.release.set()
    await ok
    assert breaker.counted == ["S"]
    await broker.close()
