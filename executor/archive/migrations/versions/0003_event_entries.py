"""event v2: an events entry holds the several events of one write, each archived as a row
of its own, numbered by its place in the entry

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OLD_KEY = ["source", "entry_id"]
_NEW_KEY = ["source", "entry_id", "entry_index"]
_COLUMNS = ["source", "entry_id", "entry_ms", "entry_seq", "client_order_id", "seq", "state",
            "prev_state", "account", "symbol", "at", "data"]
Ms = sa.BigInteger


def _sqlite_copy(key: list[str], with_index: bool) -> None:
    """SQLite cannot change a primary key in place: the table is made again in its new
    shape and its rows copied (an event of the old shape is its entry's only one: 0)."""
    index = [sa.Column("entry_index", sa.Integer, nullable=False, server_default="0")]
    op.create_table(
        "order_events_new",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.Column("entry_ms", Ms, nullable=False),
        sa.Column("entry_seq", Ms, nullable=False),
        *(index if with_index else []),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer),
        sa.Column("state", sa.Text),
        sa.Column("prev_state", sa.Text),
        sa.Column("account", sa.Text),
        sa.Column("symbol", sa.Text),
        sa.Column("at", Ms),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint(*key),
    )
    columns = ", ".join(_COLUMNS)
    op.execute(f"INSERT INTO order_events_new ({columns}) SELECT {columns} FROM order_events")
    op.drop_index("ix_events_order", table_name="order_events")
    op.drop_index("ix_events_log", table_name="order_events")
    op.drop_table("order_events")
    op.rename_table("order_events_new", "order_events")
    op.create_index("ix_events_order", "order_events", ["source", "client_order_id"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_copy(_NEW_KEY, with_index=True)
    else:
        op.add_column("order_events", sa.Column("entry_index", sa.Integer, nullable=False,
                                                server_default="0"))
        op.drop_constraint("order_events_pkey", "order_events", type_="primary")
        op.create_primary_key("order_events_pkey", "order_events", _NEW_KEY)
        op.drop_index("ix_events_log", table_name="order_events")
    op.create_index("ix_events_log", "order_events",
                    ["source", "entry_ms", "entry_seq", "entry_index"])


def downgrade() -> None:
    # The events after the first of each entry have no row of their own in the old shape.
    op.execute("DELETE FROM order_events WHERE entry_index > 0")
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_copy(_OLD_KEY, with_index=False)
    else:
        op.drop_index("ix_events_log", table_name="order_events")
        op.drop_constraint("order_events_pkey", "order_events", type_="primary")
        op.drop_column("order_events", "entry_index")
        op.create_primary_key("order_events_pkey", "order_events", _OLD_KEY)
    op.create_index("ix_events_log", "order_events", ["source", "entry_ms", "entry_seq"])
