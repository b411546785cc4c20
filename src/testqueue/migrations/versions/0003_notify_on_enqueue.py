"""PostgreSQL: every INSERT into executions notifies the workers

The NOTIFY that wakes other hosts' dispatchers on enqueue is sent by a
statement-level trigger instead of a statement of its own: one round trip
fewer between a run call and the run's start. Like any NOTIFY it is
delivered when the transaction commits. SQLite wakes its one process in
memory and gets nothing here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The channel is `testqueue.queue.postgres.CHANNEL`; an empty payload means "something was queued".
FUNCTION = """
CREATE FUNCTION testqueue_notify_enqueued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('testqueue', '');
    RETURN NULL;
END
$$
"""
TRIGGER = """
CREATE TRIGGER executions_notify_enqueued AFTER INSERT ON executions
FOR EACH STATEMENT EXECUTE FUNCTION testqueue_notify_enqueued()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER executions_notify_enqueued ON executions")
    op.execute("DROP FUNCTION testqueue_notify_enqueued()")
