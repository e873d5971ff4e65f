"""Metrics helpers: bounded labels, per-page fill sums, steps without work not sampled."""

from __future__ import annotations

from decimal import Decimal

from executor.infra.metrics import Metrics
from producer.contract import Fill


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    value: float | None = m.registry.get_sample_value(name, labels)
    return value


def fill(quantity: str, price: str) -> Fill:
    return Fill(fill_id="f", quantity=Decimal(quantity), price=Decimal(price))


def test_fills_are_summed_by_account_side_and_quote_and_unknown_accounts_left_out() -> None:
    m = Metrics()
    m.fills_recorded([
        ("default", "buy", fill("0.001", "50000"), "USDT"),
        ("default", "buy", fill("0.002", "50000"), "USDT"),
        ("default", "sell", fill("10000", "1.085"), "USD"),
        ("gone-account", "buy", fill("1", "1"), "USDT"),
    ], accounts={"default"})
    assert sample(m, "orderstream_fills_total", account="default", side="buy") == 2
    assert sample(m, "orderstream_fills_total", account="default", side="sell") == 1
    assert sample(m, "orderstream_filled_notional_total", account="default", side="buy",
                  quote_asset="USDT") == 150.0
    assert sample(m, "orderstream_filled_notional_total", account="default", side="sell",
                  quote_asset="USD") == 10850.0
    assert sample(m, "orderstream_fills_total", account="gone-account", side="buy") is None
    m.fills_recorded([("default", "buy", fill("0.001", "50000"), "USDT")], {"default"})
    assert sample(m, "orderstream_fills_total", account="default", side="buy") == 3


def test_a_step_without_jobs_is_no_sample_and_a_failing_call_still_is() -> None:
    m = Metrics()
    with m.step("amend", []):
        pass
    assert sample(m, "orderstream_step_seconds_count", step="amend") is None
    with m.step("decode", [1, 2]):
        pass
    assert sample(m, "orderstream_step_seconds_count", step="decode") == 1
    try:
        with m.step("decode", [1]):
            raise KeyError("a bug in the step")
    except KeyError:
        pass  # not swallowed by the timer, and still timed
    else:
        raise AssertionError("the step's exception was swallowed")
    assert sample(m, "orderstream_step_seconds_count", step="decode") == 2
    try:
        with m.broker_call("default", "cancel"):
            raise TimeoutError
    except TimeoutError:
        pass
    assert sample(m, "orderstream_broker_request_seconds_count", account="default",
                  operation="cancel") == 1
