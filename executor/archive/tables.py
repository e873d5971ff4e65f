"""The archive's schema (SQLAlchemy Core). Alembic's migrations (migrations/versions) create
and change it; a test holds the two together.

Money and quantities are ``Exact``: PostgreSQL's NUMERIC without a precision (it keeps every
digit and the scale it was given) and, in SQLite, whose NUMERIC affinity would make them
floats, the decimal's own text. Amounts are never summed by SQL for that reason: the
reports add Decimals in Python. Times are epoch milliseconds, as on the wire.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from producer.contract import decimal_text


class Exact(TypeDecorator[Decimal]):
    """A Decimal stored without rounding on every backend."""

    impl = sa.Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise TypeError(f"an archived amount must be a finite Decimal, got {value!r}")
        # Fixed-point text, so that the text SQLite holds sorts and reads as the wire does.
        return decimal_text(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


metadata = sa.MetaData()

Ms = sa.BigInteger  # epoch milliseconds


def _source() -> sa.Column[str]:
    # Where the rows came from: the Redis key prefix ("orders", "{orders-0}"), after the
    # deployment's name where one is set (archive.deployment: "desk-a/orders"). Partitions
    # number their entries and requests apart, and so do deployments sharing a database.
    return sa.Column("source", sa.Text, nullable=False)


cursors = sa.Table(
    "archive_cursors", metadata,
    _source(),
    sa.Column("stream", sa.Text, nullable=False),  # events, completed, failed
    sa.Column("last_id", sa.Text, nullable=False),  # the last entry stored ("0-0": none)
    sa.Column("updated_at", Ms, nullable=False),
    sa.PrimaryKeyConstraint("source", "stream"),
)

orders = sa.Table(
    "orders", metadata,
    _source(),
    sa.Column("client_order_id", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    # The parameters come from the created event; null for an order whose created event
    # was trimmed before the archive read it.
    sa.Column("side", sa.Text),
    sa.Column("type", sa.Text),
    sa.Column("quantity", Exact),
    sa.Column("quote_quantity", Exact),
    sa.Column("price", Exact),
    sa.Column("stop_price", Exact),
    sa.Column("time_in_force", sa.Text),
    sa.Column("strategy_id", sa.Text),
    sa.Column("signal_id", sa.Text),
    sa.Column("params", sa.Text),  # the created event's order parameters, as JSON
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # its last archived event's
    sa.Column("broker_order_id", sa.Text),
    sa.Column("filled_quantity", Exact, nullable=False),
    sa.Column("average_price", Exact),
    sa.Column("commission", Exact),  # null once charged in several assets
    sa.Column("commissions", sa.Text),  # per asset, as JSON
    sa.Column("reason_code", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.PrimaryKeyConstraint("source", "client_order_id"),
    sa.Index("ix_orders_account_created", "account", "created_at"),
    sa.Index("ix_orders_symbol_created", "symbol", "created_at"),
    sa.Index("ix_orders_state", "state"),
    sa.Index("ix_orders_strategy", "strategy_id"),
)

fills = sa.Table(
    "fills", metadata,
    # The broker's trade id is unique per account and symbol (Binance numbers trades per
    # symbol, OANDA per account, Alpaca globally): a fill seen twice is stored once.
    _source(),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("fill_id", sa.Text, nullable=False),
    sa.Column("client_order_id", sa.Text, nullable=False),
    sa.Column("side", sa.Text),
    sa.Column("price", Exact, nullable=False),
    sa.Column("quantity", Exact, nullable=False),
    sa.Column("commission", Exact, nullable=False),
    sa.Column("commission_asset", sa.Text),
    sa.Column("liquidity", sa.Text, nullable=False),
    sa.Column("at", Ms, nullable=False),
    sa.Column("entry_id", sa.Text, nullable=False),  # the event that carried it
    # What this fill realized in the quote asset, by the positions fold's average cost
    # (executor/model/positions.py): the daily report adds these. Null without a side.
    sa.Column("realized_pnl", Exact),
    sa.PrimaryKeyConstraint("source", "account", "symbol", "fill_id"),
    sa.Index("ix_fills_at", "at"),
    sa.Index("ix_fills_order", "source", "client_order_id"),
)

events = sa.Table(
    "order_events", metadata,
    _source(),
    sa.Column("entry_id", sa.Text, nullable=False),
    # The entry id's two numbers, so that the log reads back in its order ("10-0" sorts
    # after "9-0" as numbers, not as text).
    sa.Column("entry_ms", Ms, nullable=False),
    sa.Column("entry_seq", Ms, nullable=False),
    # The event's place in its entry: an entry holds one event, or the several of one write
    # (event v2), each a row of its own.
    sa.Column("entry_index", sa.Integer, nullable=False, server_default="0"),
    sa.Column("client_order_id", sa.Text, nullable=False),
    sa.Column("seq", sa.Integer),
    sa.Column("state", sa.Text),
    sa.Column("prev_state", sa.Text),
    sa.Column("account", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("at", Ms),
    sa.Column("data", sa.Text, nullable=False),  # the event's JSON, as the stream held it
    sa.PrimaryKeyConstraint("source", "entry_id", "entry_index"),
    sa.Index("ix_events_log", "source", "entry_ms", "entry_seq", "entry_index"),
    sa.Index("ix_events_order", "source", "client_order_id"),
)

results = sa.Table(
    "results", metadata,
    _source(),
    sa.Column("stream", sa.Text, nullable=False),  # completed, failed
    sa.Column("entry_id", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text),
    sa.Column("client_order_id", sa.Text),
    sa.Column("action", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("reason_code", sa.Text),
    sa.Column("account", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("completed_at", Ms),
    sa.Column("data", sa.Text, nullable=False),  # the result's JSON, as the stream held it
    sa.PrimaryKeyConstraint("source", "stream", "entry_id"),
    sa.Index("ix_results_order", "source", "client_order_id"),
    sa.Index("ix_results_completed", "completed_at"),
)

positions = sa.Table(
    "positions", metadata,
    # The positions the archived fills make, folded as the workers fold them; one row per
    # account and symbol (an account lives in one partition).
    _source(),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("quantity", Exact, nullable=False),
    sa.Column("average_price", Exact, nullable=False),
    sa.Column("cost_basis", Exact, nullable=False),
    sa.Column("realized_pnl", Exact, nullable=False),
    sa.Column("commission", Exact, nullable=False),
    sa.Column("other_commissions", sa.Text, nullable=False),  # per asset, as JSON
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("entry_id", sa.Text, nullable=False),  # the last event folded into it
    sa.PrimaryKeyConstraint("source", "account", "symbol"),
)

# The operator actions of the audit stream (<prefix>:audit: kills, trading states, breaker
# resets, run-time risk limits), each once, and the run-time risk limits they set, the
# latest per account.
actions = sa.Table(
    "operator_actions", metadata,
    _source(),
    sa.Column("entry_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text),  # risk_set, trading_state, kill, ...
    sa.Column("scope", sa.Text),  # global or an account
    sa.Column("at", Ms),
    sa.Column("by", sa.Text),  # user@host of the operator
    sa.Column("details", sa.Text),  # JSON
    sa.Column("data", sa.Text, nullable=False),  # the entry's JSON, as the stream held it
    sa.PrimaryKeyConstraint("source", "entry_id"),
    sa.Index("ix_actions_at", "at"),
)

risk_limits = sa.Table(
    "risk_limits", metadata,
    _source(),
    sa.Column("account", sa.Text, nullable=False),
    # JSON: the account's whole run-time limits (its own and its symbols') after the change.
    sa.Column("limits", sa.Text, nullable=False),
    sa.Column("set_at", Ms, nullable=False),
    sa.Column("set_by", sa.Text),
    # The audit entry that set them: a re-run from an older cursor never writes an older
    # setting over a newer one.
    sa.Column("entry_ms", Ms, nullable=False),
    sa.Column("entry_seq", Ms, nullable=False),
    sa.PrimaryKeyConstraint("source", "account"),
)
