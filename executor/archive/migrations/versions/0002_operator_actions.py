"""the audit stream: operator actions and the run-time risk limits they set

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Ms = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "operator_actions",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text),
        sa.Column("scope", sa.Text),
        sa.Column("at", Ms),
        sa.Column("by", sa.Text),
        sa.Column("details", sa.Text),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("source", "entry_id"),
    )
    op.create_index("ix_actions_at", "operator_actions", ["at"])
    op.create_table(
        "risk_limits",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("limits", sa.Text, nullable=False),
        sa.Column("set_at", Ms, nullable=False),
        sa.Column("set_by", sa.Text),
        sa.Column("entry_ms", Ms, nullable=False),
        sa.Column("entry_seq", Ms, nullable=False),
        sa.PrimaryKeyConstraint("source", "account"),
    )
    # The audit stream's cursor: a database made by 0001 archived no audit entries yet.
    op.execute("INSERT INTO archive_cursors (source, stream, last_id, updated_at) "
               "SELECT DISTINCT source, 'audit', '0-0', 0 FROM archive_cursors")


def downgrade() -> None:
    op.execute("DELETE FROM archive_cursors WHERE stream = 'audit'")
    op.drop_table("risk_limits")
    op.drop_table("operator_actions")
