"""Reference prices of the paper exchange: static, the seeded walk, overrides; and the
account config read from TOML."""

from __future__ import annotations

import random
import tomllib
from decimal import Decimal

import msgspec
import pytest

from executor.brokers.paper.config import PaperAccount, SymbolConfig
from executor.brokers.paper.pricing import Prices, Walk, start_ticks

D = Decimal
ORIGIN = 1_700_000_000_000


class Clock:
    def __init__(self, now: int = ORIGIN) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def reference_walk(seed: int, symbol: str, start: int, bps: int, steps: int) -> list[int]:
    """The walk as specified, written out independently: ticks after 0..steps moves."""
    rng = random.Random(f"{seed}:{symbol}")
    path = [start]
    for _ in range(steps):
        limit = max(1, path[-1] * bps // 10_000)
        path.append(max(1, path[-1] + rng.randint(-limit, limit)))
    return path


def walk_config(**changes: object) -> PaperAccount:
    return msgspec.structs.replace(PaperAccount(prices="walk"), **changes)


def test_static_prices_are_the_configured_ones_at_any_time() -> None:
    clock = Clock()
    prices = Prices(PaperAccount(), clock, origin_ms=ORIGIN)
    assert prices.price("BTCUSDT") == D("50000")
    clock.now += 10**9
    assert prices.price("EUR_USD") == D("1.08500")


def test_walk_follows_the_seeded_path_step_by_step() -> None:
    clock = Clock()
    config = walk_config()
    prices = Prices(config, clock, origin_ms=ORIGIN)
    expected = reference_walk(1, "BTCUSDT", 5_000_000, 5, 300)
    for step in range(300):
        clock.now = ORIGIN + step * 1_000 + 999  # anywhere within the step
        assert prices.price("BTCUSDT") == expected[step] * D("0.01")
    assert len(set(expected)) > 50  # it does move


def test_walk_moves_stay_within_the_volatility() -> None:
    path = reference_walk(1, "BTCUSDT", 5_000_000, 5, 1_000)
    walk = Walk(1, "BTCUSDT", 5_000_000, 5)
    for step in range(1, 1_000):
        assert walk.ticks_at(step) == path[step]
        assert abs(path[step] - path[step - 1]) <= path[step - 1] * 5 // 10_000


def test_walk_is_the_same_in_every_process_and_differs_under_another_seed() -> None:
    clock = Clock(ORIGIN + 500_000)
    one = Prices(walk_config(seed=7), clock, origin_ms=ORIGIN)
    two = Prices(walk_config(seed=7), clock, origin_ms=ORIGIN)
    other = Prices(walk_config(seed=8), clock, origin_ms=ORIGIN)
    assert one.price("ETHUSDT") == two.price("ETHUSDT")
    assert one.price("ETHUSDT") != other.price("ETHUSDT")
    # and each symbol has its own path
    assert Walk(7, "A", 1000, 5).ticks_at(50) != Walk(7, "B", 1000, 5).ticks_at(50)


def test_walk_cache_gives_the_same_answer_in_any_order() -> None:
    walk = Walk(3, "BTCUSDT", 5_000_000, 5)
    late = walk.ticks_at(5_000)
    early = walk.ticks_at(10)  # back in time: replayed from the start
    assert walk.ticks_at(5_000) == late
    assert Walk(3, "BTCUSDT", 5_000_000, 5).ticks_at(10) == early
    assert reference_walk(3, "BTCUSDT", 5_000_000, 5, 5_000)[-1] == late


def test_walk_never_goes_below_one_tick() -> None:
    walk = Walk(1, "TINY", 2, 10_000)  # moves of a whole price: it hits the floor often
    path = [walk.ticks_at(step) for step in range(5_000)]
    assert min(path) == 1


def test_walk_before_the_origin_is_the_start_price() -> None:
    clock = Clock(ORIGIN - 10_000)
    prices = Prices(walk_config(), clock, origin_ms=ORIGIN)
    assert prices.price("BTCUSDT") == D("50000")


def test_walk_prices_are_decimals_on_the_tick() -> None:
    clock = Clock(ORIGIN + 123_456)
    prices = Prices(walk_config(), clock, origin_ms=ORIGIN)
    for symbol, sym in prices.config.symbols.items():
        price = prices.price(symbol)
        assert type(price) is Decimal
        assert price % sym.tick_size == 0 and price > 0


def test_walk_start_rounds_the_configured_price_to_the_tick() -> None:
    sym = PaperAccount().symbols["EUR_USD"]
    assert start_ticks(sym) == 108_500
    off = msgspec.structs.replace(sym, price=D("1.085004"))
    assert start_ticks(off) == 108_500


def test_an_override_wins_over_the_model() -> None:
    clock = Clock(ORIGIN + 60_000)
    prices = Prices(walk_config(), clock, origin_ms=ORIGIN)
    model = prices.price("BTCUSDT")
    prices.set_overrides({"BTCUSDT": D("42000.5")})
    assert prices.price("BTCUSDT") == D("42000.5")
    assert prices.model_price("BTCUSDT") == model
    prices.set_overrides({})
    assert prices.price("BTCUSDT") == model


def test_moving_the_origin_moves_the_path() -> None:
    clock = Clock(ORIGIN + 100_000)
    prices = Prices(walk_config(), clock, origin_ms=ORIGIN)
    expected = reference_walk(1, "BTCUSDT", 5_000_000, 5, 100)
    assert prices.price("BTCUSDT") == expected[100] * D("0.01")
    prices.set_origin(ORIGIN + 50_000)
    assert prices.price("BTCUSDT") == expected[50] * D("0.01")


# -- config ----------------------------------------------------------------------------------


def test_account_config_reads_decimals_from_toml_strings() -> None:
    raw = tomllib.loads("""
        broker = "paper"
        prices = "walk"
        seed = 9
        slippage_bps = "0.5"
        taker_fee_bps = "7.5"
        failure_rate = 0.01

        [symbols.SOLUSDT]
        price = "150.25"
        tick_size = "0.01"
        step_size = "0.001"
        min_quantity = "0.001"
        max_quantity = "100000"
        depth_quantity = "200"
        base_asset = "SOL"
        quote_asset = "USDT"
    """)
    config = msgspec.convert(raw, PaperAccount, strict=False)
    assert config.slippage_bps == D("0.5") and config.taker_fee_bps == D("7.5")
    assert config.maker_fee_bps == D("8")
    sol = config.symbols["SOLUSDT"]
    assert sol.price == D("150.25") and type(sol.tick_size) is Decimal
    assert set(config.symbols) == {"SOLUSDT"}


def test_default_symbols() -> None:
    symbols = PaperAccount().symbols
    assert set(symbols) == {"BTCUSDT", "ETHUSDT", "EUR_USD"}
    eur = symbols["EUR_USD"]
    assert (eur.price, eur.tick_size, eur.step_size, eur.depth_quantity) == (
        D("1.08500"), D("0.00001"), D("1"), D("1000000"))
    assert PaperAccount().symbols is not symbols  # never shared between accounts


@pytest.mark.parametrize("bad", [
    {"failure_rate": 1.5},
    {"match_interval_ms": 0},
    {"taker_fee_bps": "-1"},
    {"unknown": 1},
    {"symbols": {}},
])
def test_account_config_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"broker": "paper", **bad}, PaperAccount, strict=False)


def test_symbol_config_refuses_a_zero_tick() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"price": "1", "tick_size": "0", "step_size": "1", "min_quantity": "1",
                         "max_quantity": "2", "depth_quantity": "1", "base_asset": "A",
                         "quote_asset": "B"}, SymbolConfig, strict=False)
