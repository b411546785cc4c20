"""webhook subscriptions, the outbox of their deliveries and each attempt

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

STAMP = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = "state = 'pending'"
BATCH_FINISHED = "event = 'batch.finished'"


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("events", sa.String(length=500), nullable=False),
        sa.Column("test_case_id", sa.Integer(), nullable=True),
        sa.Column("suite_id", sa.Integer(), nullable=True),
        sa.Column("tag", sa.String(length=100), nullable=True),
        sa.Column("payload_format", sa.String(length=16), nullable=False),
        sa.Column("own_runs_only", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["test_case_id"], ["test_cases.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["suite_id"], ["suites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_webhook_subscriptions_user_id", "webhook_subscriptions", ["user_id"], unique=False
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("execution_id", ID, nullable=True),
        sa.Column("batch_id", ID, nullable=True),
        sa.Column("test_case_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("occurred_at", STAMP, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", STAMP, nullable=False),
        sa.Column("leased_until", STAMP, nullable=True),
        sa.Column("since", STAMP, nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", STAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["webhook_subscriptions.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    for name, columns in {
        "ix_webhook_deliveries_due": ["next_attempt_at", "id"],
        "ix_webhook_deliveries_subject": ["subscription_id", "subject", "id"],
    }.items():
        op.create_index(
            name,
            "webhook_deliveries",
            columns,
            sqlite_where=sa.text(PENDING),
            postgresql_where=sa.text(PENDING),
        )
    op.create_index(
        "ix_webhook_deliveries_subscription", "webhook_deliveries", ["subscription_id", "id"]
    )
    # One batch.finished per subscription and batch, whatever two transactions do.
    op.create_index(
        "ux_webhook_deliveries_batch_finished",
        "webhook_deliveries",
        ["subscription_id", "batch_id"],
        unique=True,
        sqlite_where=sa.text(BATCH_FINISHED),
        postgresql_where=sa.text(BATCH_FINISHED),
    )
    op.create_index("ix_webhook_deliveries_execution_id", "webhook_deliveries", ["execution_id"])
    op.create_index("ix_webhook_deliveries_batch_id", "webhook_deliveries", ["batch_id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", ID, nullable=False),
        sa.Column("delivery_id", ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("at", STAMP, nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
