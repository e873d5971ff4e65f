"""Settings of an OANDA v20 account. Secrets are never inline: the account id and the API
token are read at start from the environment variable or the file the config names."""

from __future__ import annotations

from typing import Literal

import msgspec

from ...infra.secrets import one_source, secret_text

Orphans = Literal["report", "cancel"]

# developer.oanda.com/rest-live-v20/development-guide
PRACTICE_URL = "https://api-fxpractice.oanda.com"
LIVE_URL = "https://api-fxtrade.oanda.com"
PRACTICE_STREAM_URL = "https://stream-fxpractice.oanda.com"
LIVE_STREAM_URL = "https://stream-fxtrade.oanda.com"


class OandaAccount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True,
                   tag_field="broker", tag="oanda"):
    """An OANDA v20 account (practice, live, or a local server speaking v20)."""

    account_id_env: str | None = None
    account_id_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    # OANDA's practice (fxTrade Practice) servers unless switched off: real money needs a
    # deliberate change.
    practice: bool = True
    # Another server speaking v20 (the local one in devtools/oanda_exchange): REST at
    # <base_url>/v3, streams at <stream_url>.
    base_url: str | None = None
    stream_url: str | None = None
    # The instruments this account trades (EUR_USD, ...): loaded at start; any other
    # symbol is refused before sending.
    instruments: list[str] = msgspec.field(default_factory=lambda: ["EUR_USD"])
    connect_timeout_ms: int = 5_000
    request_timeout_ms: int = 10_000
    # After a send whose outcome is unknown (5xx, no reply), how long the order may still
    # appear at OANDA. OANDA publishes no backend timeout: at least our own request
    # timeout, so a send we gave up on has had its time. Within the window "no such
    # order" proves nothing; past it the order is never sent again.
    lookup_window_ms: int = 15_000
    price_cache_ms: int = 1_000  # reference prices (pricing) are reused this long
    # Reference prices from the pricing stream (pricing.py) of the instruments asked for,
    # current while it is up; off: every price is polled (GET pricing, price_cache_ms).
    pricing_stream: bool = True
    # A stream (transactions, pricing) is broken after this long without a line (OANDA
    # sends a heartbeat every 5 s): the tracker polls, prices are polled, and it is
    # reconnected.
    stream_timeout_ms: int = 10_000
    # Pending entry orders at OANDA that we have no record of, found at start and then
    # every ``reconcile_interval_ms`` (0: at start only): logged and counted ("report"),
    # or cancelled ("cancel"). Adopting them (Binance's "adopt") is not supported here.
    orphans: Orphans = "report"
    reconcile_interval_ms: int = 300_000
    # The entry of a contingent list (take_profit / stop_loss) goes with takeProfitOnFill /
    # stopLossOnFill: OANDA makes the exits on the trade the entry opens, in its fill's
    # batch (oanda/on_fill.py). Off: the workers place them once the fill is folded (the
    # oco emulated), as at every other broker. Off by default: on, a limit entry whose
    # take-profit or stop-loss is on the losing side of its fill price is cancelled by
    # OANDA at the fill (TAKE_PROFIT_ON_FILL_LOSS, STOP_LOSS_ON_FILL_LOSS: a market that gapped
    # through the stop) instead of filling, where the workers would fill it and then exit.
    native_lists: bool = False

    def __post_init__(self) -> None:
        one_source("oanda", "account_id", self.account_id_env, self.account_id_file)
        one_source("oanda", "token", self.token_env, self.token_file)
        if not self.instruments:
            raise ValueError("instruments must name at least one instrument (EUR_USD, ...)")
        for name in ("connect_timeout_ms", "request_timeout_ms", "price_cache_ms",
                     "stream_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.reconcile_interval_ms < 0:
            raise ValueError(f"reconcile_interval_ms must not be negative, got "
                             f"{self.reconcile_interval_ms}")
        if self.lookup_window_ms < self.request_timeout_ms:
            raise ValueError(f"lookup_window_ms must be at least request_timeout_ms "
                             f"({self.request_timeout_ms}), got {self.lookup_window_ms}")
        for name in ("base_url", "stream_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must start with http:// or https://, got {url!r}")

    def venue(self) -> str:
        """Where orders go: ``practice`` or ``live`` (real money)."""
        return "practice" if self.practice else "live"

    def rest_url(self) -> str:
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        return PRACTICE_URL if self.practice else LIVE_URL

    def streaming_url(self) -> str:
        """The streaming host: ``stream_url``, else ``base_url`` (a local server serves
        both), else OANDA's practice or live one."""
        if self.stream_url is not None:
            return self.stream_url.rstrip("/")
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        return PRACTICE_STREAM_URL if self.practice else LIVE_STREAM_URL

    def credentials(self) -> tuple[str, str]:
        """The account id and the API token, read now (blanks around them dropped).
        Errors (a ValueError) name where they were looked for, never what was found."""
        return (secret_text("account_id", self.account_id_env, self.account_id_file),
                secret_text("token", self.token_env, self.token_file))
