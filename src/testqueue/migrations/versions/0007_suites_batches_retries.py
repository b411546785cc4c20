"""suites, batches, retries and attempts; tags on test cases

Each attempt of an execution keeps its own log, steps and artifacts
(`attempt` joins their keys); `execution_attempts` holds how the attempts
that did not end their execution ended.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 02:00:00
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STAMP = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "suites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("test_case_ids", sa.JSON(), nullable=False),
        sa.Column("tags", sa.String(length=500), nullable=False),
        sa.Column("tag_mode", sa.String(length=8), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("updated_at", STAMP, nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "batches",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("suite_id", sa.Integer(), nullable=True),
        sa.Column("rerun_of", ID, nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("environment", sa.String(length=100), nullable=True),
        sa.Column("base_url", sa.String(length=2000), nullable=True),
        sa.Column("triggered_by", sa.String(length=100), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("cancelled_at", STAMP, nullable=True),
        sa.ForeignKeyConstraint(["suite_id"], ["suites.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["rerun_of"], ["batches.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "execution_attempts",
        sa.Column("execution_id", ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", STAMP, nullable=True),
        sa.Column("ended_at", STAMP, nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("passed_steps", sa.Integer(), nullable=False),
        sa.Column("failed_steps", sa.Integer(), nullable=False),
        sa.Column("skipped_steps", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("execution_id", "attempt"),
    )
    with op.batch_alter_table("test_cases") as batch_op:
        batch_op.add_column(sa.Column("tags", sa.String(500), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column(
                "retry_on", sa.String(100), nullable=False, server_default=",error,fail,timeout,"
            )
        )
    with _keeping_triggers("executions"), op.batch_alter_table("executions") as batch_op:
        batch_op.add_column(sa.Column("batch_id", ID, nullable=True))
        batch_op.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("retry_on", sa.String(100), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("retried", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("flaky", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_foreign_key(
            "fk_executions_batch_id", "batches", ["batch_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_index("ix_executions_batch", ["batch_id", "id"])
    for table in ("execution_steps", "artifacts"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column("attempt", sa.Integer(), nullable=False, server_default="1")
            )
        op.execute(
            f"UPDATE {table} SET attempt = "
            f"(SELECT attempt FROM executions WHERE executions.id = {table}.execution_id)"
        )
    # A log belongs to an attempt: the key grows by one column.
    _new_logs(["execution_id", "attempt"], "e.attempt", "")


@contextlib.contextmanager
def _keeping_triggers(table: str) -> Iterator[None]:
    """SQLite rebuilds a table to alter it, and its triggers go with the old one:
    they are read before and made again after (the line counts of 0004)."""
    bind = op.get_bind()
    triggers: list[str] = []
    if bind.dialect.name == "sqlite":
        found = bind.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
            {"t": table},
        )
        triggers = [str(sql) for sql in found.scalars()]
    yield
    for sql in triggers:
        op.execute(sql)


def _new_logs(key: list[str], attempt: str, keep: str) -> None:
    """execution_logs again, keyed by `key`, its rows copied over (`keep` filters them)."""
    columns: list[sa.Column[Any]] = [
        sa.Column("execution_id", ID, nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("cut_bytes", sa.BigInteger(), nullable=False),
    ]
    if "attempt" in key:
        columns.insert(1, sa.Column("attempt", sa.Integer(), nullable=False))
    op.create_table(
        "execution_logs_new",
        *columns,
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*key),
    )
    names = ", ".join(c.name for c in columns)
    chosen = ", ".join(attempt if c.name == "attempt" else f"l.{c.name}" for c in columns)
    op.execute(
        f"INSERT INTO execution_logs_new ({names}) SELECT {chosen} FROM execution_logs l "
        f"JOIN executions e ON e.id = l.execution_id {keep}"
    )
    op.drop_table("execution_logs")
    op.rename_table("execution_logs_new", "execution_logs")


def downgrade() -> None:
    _new_logs(["execution_id"], "", "WHERE l.attempt = e.attempt")
    for table in ("artifacts", "execution_steps"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("attempt")
    with _keeping_triggers("executions"), op.batch_alter_table("executions") as batch_op:
        batch_op.drop_index("ix_executions_batch")
        batch_op.drop_constraint("fk_executions_batch_id", type_="foreignkey")
        for column in ("flaky", "retried", "retry_on", "retries", "batch_id"):
            batch_op.drop_column(column)
    with op.batch_alter_table("test_cases") as batch_op:
        for column in ("retry_on", "retries", "tags"):
            batch_op.drop_column(column)
    op.drop_table("execution_attempts")
    op.drop_table("batches")
    op.drop_table("suites")
