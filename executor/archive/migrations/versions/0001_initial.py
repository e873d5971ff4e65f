"""the archive's first tables: cursors, orders, fills, order events, results, positions

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from executor.archive.tables import Exact

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Ms = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "archive_cursors",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("last_id", sa.Text, nullable=False),
        sa.Column("updated_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("source", "stream"),
    )
    op.create_table(
        "orders",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text),
        sa.Column("type", sa.Text),
        sa.Column("quantity", Exact),
        sa.Column("quote_quantity", Exact),
        sa.Column("price", Exact),
        sa.Column("stop_price", Exact),
        sa.Column("time_in_force", sa.Text),
        sa.Column("strategy_id", sa.Text),
        sa.Column("signal_id", sa.Text),
        sa.Column("params", sa.Text),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("broker_order_id", sa.Text),
        sa.Column("filled_quantity", Exact, nullable=False),
        sa.Column("average_price", Exact),
        sa.Column("commission", Exact),
        sa.Column("commissions", sa.Text),
        sa.Column("reason_code", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", Ms, nullable=False),
        sa.Column("updated_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("source", "client_order_id"),
    )
    op.create_index("ix_orders_account_created", "orders", ["account", "created_at"])
    op.create_index("ix_orders_symbol_created", "orders", ["symbol", "created_at"])
    op.create_index("ix_orders_state", "orders", ["state"])
    op.create_index("ix_orders_strategy", "orders", ["strategy_id"])
    op.create_table(
        "fills",
        sa.Column("source", sa.Text, nullable=False),
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
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.Column("realized_pnl", Exact),
        sa.PrimaryKeyConstraint("source", "account", "symbol", "fill_id"),
    )
    op.create_index("ix_fills_at", "fills", ["at"])
    op.create_index("ix_fills_order", "fills", ["source", "client_order_id"])
    op.create_table(
        "order_events",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.Column("entry_ms", Ms, nullable=False),
        sa.Column("entry_seq", Ms, nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer),
        sa.Column("state", sa.Text),
        sa.Column("prev_state", sa.Text),
        sa.Column("account", sa.Text),
        sa.Column("symbol", sa.Text),
        sa.Column("at", Ms),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("source", "entry_id"),
    )
    op.create_index("ix_events_log", "order_events", ["source", "entry_ms", "entry_seq"])
    op.create_index("ix_events_order", "order_events", ["source", "client_order_id"])
    op.create_table(
        "results",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("client_order_id", sa.Text),
        sa.Column("action", sa.Text),
        sa.Column("status", sa.Text),
        sa.Column("reason_code", sa.Text),
        sa.Column("account", sa.Text),
        sa.Column("symbol", sa.Text),
        sa.Column("completed_at", Ms),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("source", "stream", "entry_id"),
    )
    op.create_index("ix_results_order", "results", ["source", "client_order_id"])
    op.create_index("ix_results_completed", "results", ["completed_at"])
    op.create_table(
        "positions",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("quantity", Exact, nullable=False),
        sa.Column("average_price", Exact, nullable=False),
        sa.Column("cost_basis", Exact, nullable=False),
        sa.Column("realized_pnl", Exact, nullable=False),
        sa.Column("commission", Exact, nullable=False),
        sa.Column("other_commissions", sa.Text, nullable=False),
        sa.Column("updated_at", Ms, nullable=False),
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("source", "account", "symbol"),
    )


def downgrade() -> None:
    for table in ("positions", "results", "order_events", "fills", "orders",
                  "archive_cursors"):
        op.drop_table(table)
