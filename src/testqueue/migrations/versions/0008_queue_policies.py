"""queue policies: concurrency keys, queue timeouts, dedupe; the fair-share index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PENDING = "status = 'pending'"
INDEXES = {
    "ix_executions_fair": (["priority", "user_id", "queued_at", "id"], PENDING),
    "ix_executions_keyed": (["concurrency_key"], f"{PENDING} AND concurrency_key IS NOT NULL"),
    "ix_executions_deadline": (["expires_at"], f"{PENDING} AND expires_at IS NOT NULL"),
    "ix_executions_pending_case": (["test_case_id"], PENDING),
}
UNIQUE = {"ux_executions_dedupe": (["dedupe_key"], f"{PENDING} AND dedupe_key IS NOT NULL")}


def upgrade() -> None:
    # Plain ADD COLUMN: SQLite keeps the table (and the line-count triggers of 0004).
    op.add_column("test_cases", sa.Column("concurrency_key", sa.String(200), nullable=True))
    op.add_column(
        "test_cases",
        sa.Column("concurrency_limit", sa.Integer(), nullable=False, server_default="1"),
    )
    op.add_column("test_cases", sa.Column("queue_timeout_seconds", sa.Float(), nullable=True))
    op.add_column(
        "test_cases",
        sa.Column("dedupe", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("executions", sa.Column("concurrency_key", sa.String(200), nullable=True))
    op.add_column(
        "executions",
        sa.Column("concurrency_limit", sa.Integer(), nullable=False, server_default="1"),
    )
    op.add_column("executions", sa.Column("queue_timeout_s", sa.Float(), nullable=True))
    op.add_column("executions", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("executions", sa.Column("dedupe_key", sa.String(1000), nullable=True))
    for name, (columns, where) in {**INDEXES, **UNIQUE}.items():
        op.create_index(
            name,
            "executions",
            columns,
            unique=name in UNIQUE,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )
    # Fair share goes by user: a waiting run without one (none is made so) is the first admin's.
    op.execute(
        "UPDATE executions SET user_id = (SELECT min(id) FROM users WHERE role = 'admin') "
        "WHERE user_id IS NULL AND status IN ('pending', 'running')"
    )


def downgrade() -> None:
    op.execute("UPDATE executions SET status = 'cancelled' WHERE status = 'expired'")
    for name in (*INDEXES, *UNIQUE):
        op.drop_index(name, table_name="executions")
    for column in (
        "dedupe_key",
        "expires_at",
        "queue_timeout_s",
        "concurrency_limit",
        "concurrency_key",
    ):
        op.drop_column("executions", column)
    for column in ("dedupe", "queue_timeout_seconds", "concurrency_limit", "concurrency_key"):
        op.drop_column("test_cases", column)
