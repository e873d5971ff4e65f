"""Prometheus metrics of one worker process and the HTTP endpoints that serve them and
its health.

Label values come from closed sets only (action, account, status, reason code, stream
name): never a client id or free text, so the number of series stays bounded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping, Sized

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from producer.contract import Fill, Result

from ..model.states import IllegalTransition

log = logging.getLogger(__name__)

# 0.5 ms to 10 s: a paper order takes well under a millisecond, a real exchange tens to
# hundreds, and a queue backlog shows as seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "orderstream_requests", "Requests answered, by action, account, outcome and reason",
            ["action", "account", "outcome", "reason_code"], registry=r)
        self.latency = Histogram(
            "orderstream_request_latency_seconds",
            "From the request entering the pending stream to its result being written",
            buckets=LATENCY_BUCKETS, registry=r)
        self.broker_seconds = Histogram(
            "orderstream_broker_request_seconds",
            "Round trip of one broker call, by account and operation (submit, cancel, "
            "get_order; a batched submit is one call)",
            ["account", "operation"], buckets=LATENCY_BUCKETS, registry=r)
        self.step_seconds = Histogram(
            "orderstream_step_seconds",
            "Time one pipeline step took over the jobs of one batch it had work for",
            ["step"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "orderstream_batch_size", "Entries per XREADGROUP batch", buckets=BATCH_BUCKETS,
            registry=r)
        self.consumer_lag = Gauge(
            "orderstream_consumer_group_lag",
            "Entries in the pending stream not yet delivered to any worker", registry=r)
        self.pending_entries = Gauge(
            "orderstream_pending_entries",
            "Entries delivered to a worker and not yet acknowledged", registry=r)
        self.stream_length = Gauge(
            "orderstream_stream_length", "Length of each stream", ["stream"], registry=r)
        self.unresolved = Counter(
            "orderstream_unresolved_orders",
            "Orders sent whose outcome the broker did not show within its lookup window: "
            "recorded submitted, followed by client id, never sent again", registry=r)
        self.not_durable = Counter(
            "orderstream_not_durable_orders",
            "Orders not sent because Redis did not confirm their records durable in time "
            '(durability = "wait"); their requests are redelivered', registry=r)
        self.finish_conflicts = Counter(
            "orderstream_finish_conflicts",
            "Outcomes not written: the order changed meanwhile (redone later) or another "
            "worker answered the request first",
            registry=r)
        self.speculative_writes = Counter(
            "orderstream_speculative_writes",
            "Batches written without their first read, on the state this worker's last write "
            "left (applied), or whose write found that state moved and wrote nothing "
            "(missed: the batch then read first)", ["account", "outcome"], registry=r)
        self.reclaimed = Counter(
            "orderstream_reclaimed",
            "Entries claimed from workers that left them idle past the visibility timeout",
            registry=r)
        self.consumers_removed = Counter(
            "orderstream_consumers_removed",
            "Consumers of gone workers removed from the group", registry=r)
        self.redis_errors = Counter(
            "orderstream_redis_errors", "Redis errors met by the read loop", registry=r)
        self.background_errors = Counter(
            "orderstream_background_errors",
            "Unexpected failures of a worker's background loop (positions, tracker, reclaim), "
            "each restarted after a pause, by task", ["task"], registry=r)
        self.emulator_triggered = Counter(
            "orderstream_emulator_triggered",
            "Emulated orders (conditional types the broker lacks) triggered and released by "
            "this worker's emulator, by account", ["account"], registry=r)
        self.emulated_orders = Gauge(
            "orderstream_emulated_orders",
            "Orders the emulator holds or is releasing, by account (set by the worker that "
            "emulates the account, 0 on the others: take the max)", ["account"], registry=r)
        self.algos = Gauge(
            "orderstream_algos",
            "Execution algorithms (TWAP, VWAP) running, by account (set by the worker that "
            "emulates the account, 0 on the others: take the max)", ["account"], registry=r)
        self.algo_slices = Counter(
            "orderstream_algo_slices",
            "Child orders sent by execution algorithms (one per slice, and a refused one's "
            "retry), by account", ["account"], registry=r)
        self.algo_fill_ratio = Histogram(
            "orderstream_algo_fill_ratio",
            "What an execution algorithm had filled of its parent's quantity when it ended "
            "(1: all), by account", ["account"],
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0), registry=r)
        self.algo_slippage = Histogram(
            "orderstream_algo_slippage_bps",
            "An ended execution algorithm's average fill price against the price when it "
            "was accepted, in basis points (positive: worse: paid more on a buy, received "
            "less on a sell), by account", ["account"],
            buckets=(-50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50, 100), registry=r)
        self.list_exits = Counter(
            "orderstream_list_exits",
            "Exit orders of contingent lists (entries with take_profit / stop_loss) placed "
            "by this worker, by account", ["account"], registry=r)
        self.lists = Gauge(
            "orderstream_contingent_lists",
            "Contingent lists being watched (entry working, or exits working), by account "
            "(set by the worker that emulates the account, 0 on the others: take the max)",
            ["account"], registry=r)
        self.exits_blocked = Gauge(
            "orderstream_exits_blocked",
            "Exits due that the broker's rules refuse (below its minimum quantity or "
            "notional, or a type it cannot take), so they are not sent and what they would "
            "close stays open, by account and kind: a contingent list's exit (list) or a "
            "position's stop-loss / take-profit (position) (set by the worker that "
            "emulates the account, 0 on the others: take the max)",
            ["account", "kind"], registry=r)
        self.emulator_no_price = Counter(
            "orderstream_emulator_no_price",
            "Emulator passes that found no fresh reference price for a symbol with emulated "
            "orders (nothing moved or fired), by account and symbol", ["account", "symbol"],
            registry=r)
        self.internal_errors = Counter(
            "orderstream_internal_errors",
            "Requests whose handling hit a bug of ours, by pipeline step: answered "
            "internal_error when nothing of theirs was written yet, else left pending to be "
            "redone from their records; their batch-mates go on", ["step"], registry=r)
        self.tracked_changes = Counter(
            "orderstream_tracked_changes",
            "Changes of open orders learnt from the broker after submission, by new state",
            ["state"], registry=r)
        self.illegal_transitions = Counter(
            "orderstream_illegal_transitions",
            "State changes the transition table refused (a bug here or at the broker)",
            ["from_state", "to_state"], registry=r)
        # Shared safety state as this worker last saw it (Redis holds the truth). Codes
        # rather than a label per state, so a state change never leaves a stale series.
        self.trading_state = Gauge(
            "orderstream_trading_state",
            "Trading state by scope (global or an account): 0 active, 1 reducing, 2 halted",
            ["scope"], registry=r)
        self.circuit_state = Gauge(
            "orderstream_circuit_state",
            "Circuit breaker of each broker account: 0 closed, 1 half-open, 2 open",
            ["account"], registry=r)
        self.rate_limit_used = Gauge(
            "orderstream_rate_limit_used",
            "Use of each shared rate limit in its current window (weight or orders)",
            ["account", "limit"], registry=r)
        self.rate_limit_cap = Gauge(
            "orderstream_rate_limit_cap", "The cap of each shared rate limit",
            ["account", "limit"], registry=r)
        self.trimmed = Counter(
            "orderstream_trimmed_entries",
            "Entries this worker's retention passes removed from each stream (pending: "
            "acknowledged requests; completed, failed: results past results_retention_ms or "
            "results_maxlen and read by every reader; "
            "events: past events_retention_ms and read by every reader)",
            ["stream"], registry=r)
        self.event_reader_lag = Gauge(
            "orderstream_event_reader_lag_seconds",
            "Age of the oldest orders:events entry each reader (the positions fold, each "
            "registered reader) has not processed yet, 0 when it is caught up (probed from "
            "Redis): a reader that stops advancing holds the trim of the log",
            ["reader"], registry=r)
        self.result_reader_lag = Gauge(
            "orderstream_result_reader_lag_seconds",
            "Age of the oldest entry of a result stream (completed, failed) each of its "
            "registered readers has not processed yet, 0 when it is caught up (probed from "
            "Redis): a reader that stops advancing holds the trim of the stream",
            ["stream", "reader"], registry=r)
        self.dead_letters = Counter(
            "orderstream_dead_letters",
            "Requests dead-lettered to the failed stream: poison (delivered too often without "
            "an outcome) or deleted (removed from the stream while pending)",
            ["reason"], registry=r)
        # Fleet-wide figures every worker probes from Redis (probes.py): every worker
        # exports the same value, so dashboards take max(), not sum().
        self.open_orders = Gauge(
            "orderstream_open_orders", "Orders not yet final, by state (probed from Redis)",
            ["state"], registry=r)
        self.position = Gauge(
            "orderstream_position_quantity",
            "Net position of each configured account and symbol, long > 0 (probed from "
            "Redis; a float for display, the decimal truth is in the positions hash)",
            ["account", "symbol"], registry=r)
        # Counted once fleet-wide: by the worker whose positions fold wrote the fill.
        self.fills = Counter(
            "orderstream_fills", "Fills recorded, by account and side", ["account", "side"],
            registry=r)
        self.filled_notional = Counter(
            "orderstream_filled_notional",
            "Quantity times price of the fills, in each symbol's quote asset (a float for "
            "display; the decimal truth is in the events)",
            ["account", "side", "quote_asset"], registry=r)
        self.redis_up = Gauge(
            "orderstream_redis_up", "1 if the last probe of Redis answered, else 0", registry=r)
        self.broker_up = Gauge(
            "orderstream_broker_up", "1 if the last ping of the account's broker answered",
            ["account"], registry=r)
        self.broker_stream_up = Gauge(
            "orderstream_broker_stream_up",
            "1 while the account's stream is subscribed, 0 since it was lost; feed=orders: "
            "its push feed (Binance's user data stream, OANDA's transactions stream, "
            "Alpaca's trade_updates; open orders are polled meanwhile), feed=prices: the "
            "market data stream of reference prices (OANDA's pricing stream, Binance's market "
            "stream, Alpaca's quote streams; prices are polled meanwhile)",
            ["account", "feed"], registry=r)
        self.broker_stream_failures = Counter(
            "orderstream_broker_stream_failures",
            "Stream subscriptions that failed or broke (each reconnect attempt counts), by "
            "account and feed (orders, prices)",
            ["account", "feed"], registry=r)
        self.broker_orphans = Counter(
            "orderstream_broker_orphans",
            "Orders open at a broker with no record of ours, found by reconciliation, by "
            "account and what was done (report, adopt, cancel, cancel_failed)",
            ["account", "action"], registry=r)
        self.broker_position_drift = Counter(
            "orderstream_broker_position_drift",
            "Changes found by reconciliation in what a broker holds beyond our positions "
            "(against what it held beyond them at the worker's start), by account and symbol; "
            "each change counted once",
            ["account", "symbol"], registry=r)
        self.info = Info("orderstream_worker", "This worker", registry=r)
        self._children: dict[tuple[str, str, str, str], Counter] = {}
        # Label lookups cost a lock and a tuple each: the children are kept, as above.
        self._steps: dict[str, Histogram] = {}
        self._calls: dict[tuple[str, str], Histogram] = {}
        self._fills: dict[tuple[str, str, str], tuple[Counter, Counter]] = {}

    def record(self, result: Result, now_ms: int, accounts: Container[str]) -> None:
        """Count one result. ``accounts`` are the configured ones: an account named only by
        a (refused) request is counted as "", so producers cannot grow the label set."""
        account = result.account if result.account and result.account in accounts else ""
        # The enums themselves (str subclasses, equal to their values) key the children: an
        # enum's ``.value`` is a Python call, and this runs for every result.
        key = (result.action, account, result.status, result.reason_code or "")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(*key)
        child.inc()
        self.latency.observe(max(now_ms - result.enqueued_at, 0) / 1000)

    def step(self, name: str, jobs: Sized) -> contextlib.AbstractContextManager[None]:
        """Time one pipeline step over a batch; a step with no jobs is not a sample (its
        microsecond would drown the real ones)."""
        if not jobs:
            return _UNTIMED
        child = self._steps.get(name)
        if child is None:
            child = self._steps[name] = self.step_seconds.labels(name)
        return _Timed(child)

    @contextlib.contextmanager
    def broker_call(self, account: str, operation: str) -> Iterator[None]:
        """Time one call to a broker, whatever its outcome."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.broker_called(account, operation, time.perf_counter() - started)

    def broker_called(self, account: str, operation: str, seconds: float) -> None:
        """Count one call to a broker that took ``seconds``."""
        child = self._calls.get((account, operation))
        if child is None:
            child = self._calls[account, operation] = self.broker_seconds.labels(
                account, operation)
        child.observe(seconds)

    def fills_recorded(self, fills: Iterable[tuple[str, str, Fill, str | None]],
                       accounts: Container[str]) -> None:
        """Count fills just recorded: (account, side, fill, quote asset) each; fills of an
        account not configured (any more) are left out, so the label set stays bounded.
        Summed first, so a page of fills costs one increment per series, not per fill."""
        sums: dict[tuple[str, str, str], list[float]] = {}
        for account, side, fill, quote_asset in fills:
            if account in accounts:
                total = sums.setdefault((account, side, quote_asset or ""), [0, 0.0])
                total[0] += 1
                total[1] += float(fill.quantity) * float(fill.price)
        for key, (count, notional) in sums.items():
            children = self._fills.get(key)
            if children is None:
                children = self._fills[key] = (self.fills.labels(key[0], key[1]),
                                               self.filled_notional.labels(*key))
            children[0].inc(count)
            children[1].inc(notional)

    def illegal_transition(self, exc: IllegalTransition) -> None:
        """Count one refused transition; both labels are order states (at most 11 x 11)."""
        self.illegal_transitions.labels(exc.current.value, exc.target.value).inc()


class PartitionsCollector(Collector):
    """The metrics of the partitions one process serves, each worker's under its own
    ``partition`` label, as one exposition: each partition's worker keeps its own registry
    (its gauges say what its partition holds: lag, stream lengths, open orders), and the
    families of one name are merged so that every name appears once."""

    def __init__(self, parts: Mapping[str, CollectorRegistry]) -> None:
        self.parts = dict(parts)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for partition, registry in self.parts.items():
            for family in registry.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
                for sample in family.samples:
                    into.samples.append(sample._replace(
                        labels={**sample.labels, "partition": partition}))
        yield from merged.values()


def partitions_registry(parts: Mapping[str, CollectorRegistry]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PartitionsCollector(parts))
    return registry


async def start_http(registry: CollectorRegistry, host: str, port: int,
                     ready: Callable[[], bool] | None = None,
                     not_ready: Callable[[], Awaitable[str | None]] | None = None,
                     ) -> tuple[web.AppRunner, int]:
    """Serve /metrics, /healthz (alive: 200 once started) and /readyz (200 only while
    ``not_ready`` finds nothing wrong; 503 with its reason otherwise). Returns the runner and
    the port actually bound."""

    async def metrics_handler(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        if ready is not None and not ready():
            return web.Response(status=503, text="starting\n")
        return web.Response(text="ok\n")

    async def readiness(_: web.Request) -> web.Response:
        if ready is not None and not ready():
            return web.Response(status=503, text="not started (or stopping)\n")
        why = await not_ready() if not_ready is not None else None
        if why is not None:
            return web.Response(status=503, text=f"{why}\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", readiness)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


class _Timed:
    """A step's timer: a class rather than a generator, as several run for every batch."""

    __slots__ = ("_histogram", "_started")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._histogram.observe(time.perf_counter() - self._started)


_UNTIMED = contextlib.nullcontext()
