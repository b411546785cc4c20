"""queue_state.configured_slots: the MAX_CONCURRENT_EXECUTIONS workers start with

Each worker process writes its MAX_CONCURRENT_EXECUTIONS here when it starts,
and every claim and status read takes the number from here (unless an admin
set one at runtime in `max_concurrent`), so hosts started with different
values still share one global limit: the latest one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queue_state") as batch_op:
        batch_op.add_column(sa.Column("configured_slots", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("queue_state") as batch_op:
        batch_op.drop_column("configured_slots")
