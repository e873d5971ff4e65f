"""Settings of a Binance spot account. Secrets are never inline: the key and the secret are
read at start from the environment variable or the file the config names."""

from __future__ import annotations

import re
import urllib.parse
from typing import Literal

import msgspec

from ...infra.secrets import one_source, secret_text

Orphans = Literal["report", "adopt", "cancel"]
# Binance answers -1007 "execution status unknown" after waiting this long for its backend,
# which may still execute the order afterwards (rest-api.md).
BACKEND_TIMEOUT_MS = 10_000
# Binance's market stream hosts (web-socket-streams.md; testnet/web-socket-streams.md).
LIVE_MARKET_URL = "wss://stream.binance.com:9443"
TESTNET_MARKET_URL = "wss://stream.testnet.binance.vision"


class BinanceAccount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True,
                     tag_field="broker", tag="binance"):
    """A Binance spot account (mainnet, testnet, or any Binance-compatible server)."""

    api_key_env: str | None = None
    api_key_file: str | None = None
    api_secret_env: str | None = None
    api_secret_file: str | None = None
    # Binance's spot testnet unless switched off: real money needs a deliberate change.
    testnet: bool = True
    # Another server speaking Binance's API (a local simulator): REST at <base_url>/api, the
    # WebSocket API at <ws_api_url> (default: the same host, ws(s)://.../ws-api/v3).
    base_url: str | None = None
    ws_api_url: str | None = None
    # Round quantities down to the symbol's step instead of refusing them (the order is
    # recorded with the rounded quantity).
    round_quantity: bool = False
    exchange_info_refresh_ms: int = 3_600_000
    # Orders open at Binance that we have no record of, found at start and then every
    # ``reconcile_interval_ms`` (0: at start only): logged and counted ("report"), also
    # followed as ours ("adopt"), or cancelled ("cancel").
    orphans: Orphans = "report"
    reconcile_interval_ms: int = 300_000
    recv_window_ms: int = 5_000
    # After a send whose outcome is unknown (-1007, 5xx, no reply), how long the order may
    # still appear at Binance: its backend gives up waiting after 10 s and may execute the
    # order later; a request is accepted until its timestamp + recvWindow. Within the
    # window "Order does not exist" proves nothing; past it the order is never sent again.
    lookup_window_ms: int = 12_000
    price_cache_ms: int = 1_000  # reference prices (ticker/price) are reused this long
    # Reference prices from Binance's market streams (each symbol's trades) while they are
    # up, instead of a ticker/price poll every price_cache_ms (binance/market.py).
    price_stream: bool = True
    # The market streams' host (wss://stream.binance.com:9443, the testnet's, or the local
    # server's, ws(s)://<base_url host>, by default); combined streams at <url>/stream.
    market_stream_url: str | None = None
    # The market stream is lost after this long without an answer to our ping (or a
    # handshake): prices are polled and it is reconnected.
    price_stream_timeout_ms: int = 10_000
    # The entry of a contingent list (take_profit / stop_loss) that Binance can take as one
    # order list is sent as orderList/otoco (both levels) or /oto (one): Binance places
    # the exits itself the moment the entry has fully filled (binance/oto.py). Off: the
    # workers place them once the fill is folded, as at every other broker.
    native_lists: bool = False

    def __post_init__(self) -> None:
        one_source("binance", "api_key", self.api_key_env, self.api_key_file)
        one_source("binance", "api_secret", self.api_secret_env, self.api_secret_file)
        if not 0 < self.recv_window_ms <= 60_000:
            raise ValueError(f"recv_window_ms must be within (0, 60000], got "
                             f"{self.recv_window_ms}")
        if self.lookup_window_ms < max(BACKEND_TIMEOUT_MS, self.recv_window_ms):
            raise ValueError(
                f"lookup_window_ms must be at least {BACKEND_TIMEOUT_MS} (Binance's backend "
                f"timeout) and at least recv_window_ms ({self.recv_window_ms}: a request is "
                f"accepted until its timestamp + recvWindow), got {self.lookup_window_ms}")
        if self.reconcile_interval_ms < 0:
            raise ValueError(f"reconcile_interval_ms must not be negative, got "
                             f"{self.reconcile_interval_ms}")
        for name in ("exchange_info_refresh_ms", "price_cache_ms", "price_stream_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got "
                             f"{self.base_url!r}")
        if self.testnet and self.base_url is not None and _is_live_host(self.base_url):
            # A live account must never pass for a testnet one (and so pass the mode check).
            raise ValueError(f"testnet = true but base_url {self.base_url!r} is Binance's "
                             "live API: set testnet = false (and mode = \"live\")")

        if self.market_stream_url is not None:
            if not self.market_stream_url.startswith(("ws://", "wss://")):
                raise ValueError(f"market_stream_url must start with ws:// or wss://, got "
                                 f"{self.market_stream_url!r}")
            if self.testnet and _is_live_host(self.market_stream_url):
                # Test orders emulated on live prices would trigger where the testnet's
                # own orders do not.
                raise ValueError(f"testnet = true but market_stream_url "
                                 f"{self.market_stream_url!r} is Binance's live stream")

    def venue(self) -> str:
        """What the account trades with: the testnet's test money, or real money (the
        deployment's ``mode`` must be ``live`` for that)."""
        return "practice" if self.testnet else "live"

    def credentials(self) -> tuple[str, str]:
        """The API key and secret, read now (blanks around them dropped). Errors (a
        ValueError) name where they were looked for, never what was found."""
        return (secret_text("api_key", self.api_key_env, self.api_key_file),
                secret_text("api_secret", self.api_secret_env, self.api_secret_file))

    def rest_url(self) -> str | None:
        return None if self.base_url is None else self.base_url.rstrip("/") + "/api"

    def ws_url(self) -> str | None:
        if self.ws_api_url is not None:
            return self.ws_api_url
        if self.base_url is None:
            return None
        return "ws" + self.base_url.rstrip("/")[len("http"):] + "/ws-api/v3"

    def market_url(self) -> str:
        """The market streams' host (no path): ``market_stream_url``, else a local server's
        (``base_url``'s host, unless it is one of Binance's), else Binance's testnet or
        live one."""
        if self.market_stream_url is not None:
            return self.market_stream_url.rstrip("/")
        if self.base_url is not None and not _is_binance_host(self.base_url):
            return "ws" + self.base_url.rstrip("/")[len("http"):]
        # Binance's own API (one of its live hosts, or the testnet's) streams elsewhere.
        return TESTNET_MARKET_URL if self.testnet else LIVE_MARKET_URL


# Binance's spot API hosts that trade real money (rest-api.md "General API Information").
_LIVE_HOSTS = re.compile(r"^(api(-gcp|[1-4])?\.binance\.com|data-api\.binance\.vision"
                         r"|stream\.binance\.com|data-stream\.binance\.vision)$")


def _is_binance_host(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host.endswith((".binance.com", ".binance.vision"))


def _is_live_host(url: str) -> bool:
    return bool(_LIVE_HOSTS.match(urllib.parse.urlsplit(url).hostname or ""))
