"""line index: drop ix_executions_history, cover status in ix_executions_line

SQLite's planner took the (status, id) index for every pending-line query and
sorted the whole line in a temporary B-tree; without it, the claim, the status
page and the position counts walk the partial index `ix_executions_line`,
which now also holds `status` so counts never visit the table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch_op:
        batch_op.drop_index("ix_executions_history")
        batch_op.drop_index("ix_executions_line")
        batch_op.create_index(
            "ix_executions_line",
            ["priority", "queued_at", "id", "status"],
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch_op:
        batch_op.drop_index("ix_executions_line")
        batch_op.create_index(
            "ix_executions_line",
            ["priority", "queued_at", "id"],
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )
        batch_op.create_index("ix_executions_history", ["status", "id"], unique=False)
