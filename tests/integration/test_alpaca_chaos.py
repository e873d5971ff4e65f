"""The chaos test of the delivery guarantees against the local Alpaca API: worker processes
SIGKILLed at random (some exactly between the broker call and the write of its outcome)
while Alpaca answers some new orders with a 500, before or after storing them. Orders are
counted per client_order_id at Alpaca: none is created twice, every request gets exactly
one result, nothing stays pending."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.alpaca_exchange import AlpacaExchangeServer
from devtools.chaos import Chaos, ChaosConfig
from tests.fakes.alpaca import KEY_ENV, KEY_ID, SECRET, SECRET_ENV
from tests.fakes.threaded import in_thread


async def test_kills_at_random_send_nothing_twice_to_alpaca(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_ID)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = AlpacaExchangeServer(KEY_ID, SECRET, rate_limit=10**9)
    # Market orders fill at the price (valued at the quote's mid); limits rest 2% away
    # (the IOC ones are cancelled at once).
    server.set_price("BTC/USD", "50000")
    server.random_faults(before=0.02, after=0.02, seed=3)
    with in_thread(server):
        config = tmp_path / "orderstream.toml"
        config.write_text(f'[accounts.default]\nbroker = "alpaca"\n'
                          f'key_id_env = "{KEY_ENV}"\nsecret_env = "{SECRET_ENV}"\n'
                          f'paper = true\nbase_url = "{server.url}"\n'
                          'symbols = ["BTC/USD"]\n'
                          '[limits.default]\nweight_per_minute = 0\nmax_wait_ms = 2000\n')
        # A networked broker answers in milliseconds: a longer visibility timeout than the
        # paper run's, as in the Binance chaos test.
        cfg = ChaosConfig(orders=1_000, publish_s=6.0, kill_for_s=10.0,
                          config_file=str(config), symbol="BTC/USD",
                          worker_env={**ChaosConfig().worker_env,
                                      "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "8000"})

        async def counts(_: aioredis.Redis) -> tuple[Mapping[str, int], int]:
            # Every POST of a client id after its first was refused as taken (or created
            # a second order, which ``created`` shows).
            again = sum(n - 1 for n in server.received.values() if n > 1)
            return dict(server.engine.created), again

        report = await Chaos(redis_url, cfg, tmp_path, say=print,
                             exchange_counts=counts).run()
    summary = "\n".join(report.lines())
    print(summary)
    # Clean: nothing lost, duplicated, sent twice, inconsistent or pending; replay agrees.
    assert report.clean, summary
    assert (report.requests, report.results) == (1_000, 1_000), summary
    assert report.kills >= 4 and report.outcomes.get("filled", 0) > 300, summary
    assert server.statuses[500] > 10, summary  # the faults really were injected
