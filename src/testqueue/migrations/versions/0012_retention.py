"""retention: batches keep their verdict; indexes for history at a million rows

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COUNTS = ("passed", "failed", "errored", "timed_out", "cancelled", "expired", "flaky")
STAMPS = ("first_start", "last_end")
# The finished statuses, as `services.executions` repeats them beside a status filter.
FINISHED = "status IN ('cancelled', 'completed', 'expired')"
# name: (columns, partial condition or None)
INDEXES: dict[str, tuple[list[str], str | None]] = {
    # Finished runs only: with pending and running rows in it, SQLite's planner took it
    # for the claim's reads over the line's own indexes (engine throughput fell 7-fold).
    # Pending and running are few (MAX_PENDING, the slots); their pages read the line.
    "ix_executions_status": (["status", "id"], FINISHED),
    "ix_executions_waiting": (["id"], "status = 'pending'"),
    "ix_executions_result": (["result", "id"], "result IS NOT NULL"),
    "ix_executions_failed": (["id"], "(result || '') IN ('error', 'fail', 'timeout')"),
    "ix_executions_ended": (["completed_at", "id"], "completed_at IS NOT NULL"),
}


def upgrade() -> None:
    # Plain ADD COLUMN: SQLite keeps the tables (and the line-count triggers of 0004).
    for name in COUNTS:
        op.add_column(
            "batches",
            sa.Column(f"pruned_{name}", sa.Integer(), nullable=False, server_default="0"),
        )
    for name in STAMPS:
        op.add_column(
            "batches", sa.Column(f"pruned_{name}", sa.DateTime(timezone=True), nullable=True)
        )
    for name, (columns, where) in INDEXES.items():
        condition = None if where is None else sa.text(where)
        op.create_index(
            name, "executions", columns, sqlite_where=condition, postgresql_where=condition
        )


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="executions")
    for name in (*COUNTS, *STAMPS):
        op.drop_column("batches", f"pruned_{name}")
