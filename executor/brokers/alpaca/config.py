"""Settings of an Alpaca trading API v2 account. Secrets are never inline: the key id and
the secret key are read at start from the environment variable or the file the config
names."""

from __future__ import annotations

from typing import Literal

import msgspec

from ...infra.secrets import one_source, secret_text

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
# The trade_updates stream (alpaca-py's BaseURL.TRADING_STREAM_PAPER / _LIVE).
PAPER_STREAM_URL = "wss://paper-api.alpaca.markets/stream"
LIVE_STREAM_URL = "wss://api.alpaca.markets/stream"
# The market data API (latest quotes), for paper and live accounts alike.
DATA_URL = "https://data.alpaca.markets"
# Its real-time stream, for paper and live accounts alike (alpaca-py's
# BaseURL.MARKET_DATA_STREAM; stream.data.sandbox.alpaca.markets is the Broker API's
# sandbox, not paper trading's): stocks at /v2/{feed}, crypto at /v1beta3/crypto/us.
DATA_STREAM_URL = "wss://stream.data.alpaca.markets"
CRYPTO_STREAM_PATH = "/v1beta3/crypto/us"


class AlpacaAccount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True,
                    tag_field="broker", tag="alpaca"):
    """An Alpaca account (paper, live, or a server speaking Alpaca's API)."""

    key_id_env: str | None = None
    key_id_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    # Paper trading unless switched off: real money needs a deliberate change.
    paper: bool = True
    # Another server speaking Alpaca's API (the local one in devtools/alpaca_exchange):
    # REST at <base_url>/v2/...; the trade_updates stream at ``stream_url`` (default
    # Alpaca's paper or live one, or ws(s)://<base_url's host>/stream when that is set).
    base_url: str | None = None
    stream_url: str | None = None
    # Follow the trade_updates stream (order changes as they happen; polling covers the
    # rest). false: the tracker's polling only.
    trade_updates: bool = True
    # The market data API the reference prices come from (latest quote: the mid of bid and
    # ask); default Alpaca's, or ``base_url`` when that is set (the local server has both).
    data_url: str | None = None
    # The stock quote feed: "iex" (free), "sip" (all US exchanges, subscription),
    # "delayed_sip".
    feed: Literal["iex", "sip", "delayed_sip"] = "iex"
    price_cache_ms: int = 1_000  # a reference price is reused this long
    # Reference prices from the market data stream (quotes of the symbols asked for) while
    # it is up, instead of a latest-quote poll every price_cache_ms (alpaca/quotes.py).
    price_stream: bool = True
    # The market data stream's host (default Alpaca's, or ws(s)://<base_url's host> when
    # that is set): stocks at <url>/v2/<feed>, crypto at <url>/v1beta3/crypto/us.
    data_stream_url: str | None = None
    # The stream is lost after this long without an answer to our ping (or a handshake):
    # prices are polled and it is reconnected.
    price_stream_timeout_ms: int = 10_000
    # The symbols this account trades ("AAPL", "BTC/USD"); an order for another is refused
    # before it is sent. Checked at start against GET /v2/assets/{symbol}.
    symbols: list[str] = msgspec.field(default_factory=list)
    # Sent as extended_hours=true on limit orders (Alpaca takes it on limit day/gtc only).
    extended_hours: bool = False
    connect_timeout_ms: int = 5_000
    request_timeout_ms: int = 10_000
    # After a send whose outcome is unknown (5xx, no reply), how long the order may still
    # appear at Alpaca: within it "no such order" proves nothing; past it the order is
    # never sent again (see base.Broker). Alpaca publishes no backend timeout: this covers
    # our own request timeout and more.
    lookup_window_ms: int = 15_000
    # How often the account's open orders are compared with our records, and orphans (open
    # at Alpaca with no record of ours) reported; 0: never.
    reconcile_interval_ms: int = 60_000
    # The entry of a contingent list (take_profit / stop_loss) that Alpaca can take as one
    # order is sent with order_class bracket (both levels) or oto (one): Alpaca activates
    # the exit itself once the entry has completely filled (alpaca/bracket.py). Off: the
    # workers place the exits once the fill is folded, as at every other broker.
    native_lists: bool = False

    def __post_init__(self) -> None:
        one_source("alpaca", "key_id", self.key_id_env, self.key_id_file)
        one_source("alpaca", "secret", self.secret_env, self.secret_file)
        for name in ("connect_timeout_ms", "request_timeout_ms", "price_cache_ms",
                     "price_stream_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.reconcile_interval_ms < 0:
            raise ValueError(f"reconcile_interval_ms must not be negative, got "
                             f"{self.reconcile_interval_ms}")
        if self.lookup_window_ms < self.request_timeout_ms:
            raise ValueError(f"lookup_window_ms must be at least request_timeout_ms "
                             f"({self.request_timeout_ms}), got {self.lookup_window_ms}")
        for name in ("base_url", "data_url", "stream_url", "data_stream_url"):
            url = getattr(self, name)
            schemes = (("ws://", "wss://") if name.endswith("stream_url")
                       else ("http://", "https://"))
            if url is not None and not url.startswith(schemes):
                raise ValueError(f"{name} must start with {' or '.join(schemes)}, got "
                                 f"{url!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols lists a symbol twice")

    def venue(self) -> str:
        """"practice" for a paper account, "live" for one that trades real money (the
        worker's mode check reads it)."""
        return "practice" if self.paper else "live"

    def rest_url(self) -> str:
        """Where the REST API is: ``base_url`` when set, else Alpaca's paper or live host."""
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        return PAPER_URL if self.paper else LIVE_URL

    def stream_ws_url(self) -> str:
        """Where the trade_updates stream is."""
        if self.stream_url is not None:
            return self.stream_url
        if self.base_url is not None:
            return "ws" + self.base_url.rstrip("/")[len("http"):] + "/stream"
        return PAPER_STREAM_URL if self.paper else LIVE_STREAM_URL

    def quote_stream_urls(self) -> tuple[str, str]:
        """Where the market data streams are: the stocks' (on ``feed``) and crypto's."""
        if self.data_stream_url is not None:
            host = self.data_stream_url.rstrip("/")
        elif self.base_url is not None:
            host = "ws" + self.base_url.rstrip("/")[len("http"):]
        else:
            host = DATA_STREAM_URL
        return f"{host}/v2/{self.feed}", host + CRYPTO_STREAM_PATH

    def market_data_url(self) -> str:
        if self.data_url is not None:
            return self.data_url.rstrip("/")
        return self.rest_url() if self.base_url is not None else DATA_URL

    def credentials(self) -> tuple[str, str]:
        """The key id and secret key, read now (blanks around them dropped). Errors (a
        ConfigError or ValueError) name where they were looked for, never what was found."""
        return (secret_text("key_id", self.key_id_env, self.key_id_file),
                secret_text("secret", self.secret_env, self.secret_file))

