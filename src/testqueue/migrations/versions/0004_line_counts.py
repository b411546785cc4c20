"""line_counts: pending executions per priority, kept by SQLite triggers

A position is counted when it is read (invariant 7). On SQLite that count
walks the line's index one entry at a time, so a run near the back of a long
line is counted from the back instead: the runs of its priority, less those
behind it. The per-priority totals that needs are kept here by triggers, in
the same transaction as every change to the line, so they cannot drift.

PostgreSQL gets the table (one schema for both) but no triggers: counter
rows would serialise concurrent writers on many hosts, so it counts forward.

A later SQLite batch migration that recreates `executions` drops these
triggers and must create them again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JOIN = """
    INSERT INTO line_counts (priority, pending) VALUES (NEW.priority, 1)
    ON CONFLICT (priority) DO UPDATE SET pending = pending + 1;
"""
LEAVE = "UPDATE line_counts SET pending = pending - 1 WHERE priority = OLD.priority;"
# An UPDATE that sets status or priority leaves the count for its old place
# and joins the one for its new place; setting them to what they were nets 0.
TRIGGERS = {
    "line_counts_insert": (
        f"AFTER INSERT ON executions WHEN NEW.status = 'pending' BEGIN {JOIN} END"
    ),
    "line_counts_delete": (
        f"AFTER DELETE ON executions WHEN OLD.status = 'pending' BEGIN {LEAVE} END"
    ),
    "line_counts_leave": (
        "AFTER UPDATE OF status, priority ON executions WHEN OLD.status = 'pending' "
        f"BEGIN {LEAVE} END"
    ),
    "line_counts_join": (
        "AFTER UPDATE OF status, priority ON executions WHEN NEW.status = 'pending' "
        f"BEGIN {JOIN} END"
    ),
}


def upgrade() -> None:
    op.create_table(
        "line_counts",
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("priority"),
    )
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO line_counts (priority, pending) "
        "SELECT priority, count(*) FROM executions WHERE status = 'pending' GROUP BY priority"
    )
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("line_counts")
