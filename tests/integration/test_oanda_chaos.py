"""The chaos test of the delivery guarantees against the local OANDA v20 server: worker
processes SIGKILLed at random (some exactly between the broker call and the write of its
outcome) while the server answers some creates with a 503, before or after storing the
order. Orders are counted per clientExtensions.id at the server: none is created twice,
every request gets exactly one result, nothing stays pending."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.chaos import Chaos, ChaosConfig
from devtools.oanda_exchange import OandaExchangeServer
from devtools.oanda_exchange.venue import instrument
from tests.fakes.oanda import ACCOUNT_ENV, ACCOUNT_ID, TOKEN, TOKEN_ENV
from tests.fakes.threaded import in_thread

# The chaos orders: 0.001 and 0.002 units around 50000 (a crypto CFD's shape).
SYMBOL = "BTC_USD"


async def test_kills_at_random_send_nothing_twice_to_oanda(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(ACCOUNT_ENV, ACCOUNT_ID)
    server = OandaExchangeServer(TOKEN, ACCOUNT_ID)
    server.venue.instruments[SYMBOL] = instrument(SYMBOL, 1, units=3, minimum="0.001")
    server.set_price(SYMBOL, "49999.5", "50000.5")
    server.random_faults(before=0.02, after=0.02, seed=3)
    with in_thread(server):
        config = tmp_path / "orderstream.toml"
        # practice = true with a local base_url: the default mode ("paper") allows it.
        config.write_text(f'[accounts.default]\nbroker = "oanda"\n'
                          f'account_id_env = "{ACCOUNT_ENV}"\ntoken_env = "{TOKEN_ENV}"\n'
                          f'practice = true\nbase_url = "{server.url}"\n'
                          f'instruments = ["{SYMBOL}"]\n'
                          'request_timeout_ms = 2000\nlookup_window_ms = 2000\n'
                          '[limits.default]\nmax_wait_ms = 2000\n')
        # A networked server answers in milliseconds: a batch of 50 takes longer than the
        # paper run's 1.5 s visibility timeout (see test_binance_chaos.py).
        cfg = ChaosConfig(orders=1_000, publish_s=5.0, kill_for_s=9.0, symbol=SYMBOL,
                          config_file=str(config),
                          worker_env={**ChaosConfig().worker_env,
                                      "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "8000"})

        async def counts(_: aioredis.Redis) -> tuple[Mapping[str, int], int]:
            return dict(server.venue.created), sum(server.venue.duplicates.values())

        report = await Chaos(redis_url, cfg, tmp_path, say=print,
                             exchange_counts=counts).run()
    summary = "\n".join(report.lines())
    print(summary)
    assert report.requests == 1_000
    assert report.results == report.requests, summary
    assert report.kills >= 4, summary
    # Nothing lost, duplicated, sent twice, inconsistent or pending; replay agrees.
    assert report.clean, summary
    assert report.outcomes.get("filled", 0) > 200, summary
    assert server.statuses[503] > 5, summary  # the faults really were injected
