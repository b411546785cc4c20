"""artifacts in the database, in chunks, for hosts that share no disk

Each artifact row says where its bytes are (`location`: a file on disk, or
`artifact_chunks`), whether they are all there (`stored`) and, when a file was
not kept, why (`error`). Rows made before this revision are files on disk,
stored.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch_op:
        batch_op.add_column(
            sa.Column("location", sa.String(16), nullable=False, server_default="disk")
        )
        batch_op.add_column(
            sa.Column("stored", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "artifact_chunks",
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("artifact_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("artifact_chunks")
    # Artifacts whose bytes lived only in the dropped table have nothing left to serve.
    op.execute("DELETE FROM artifacts WHERE location <> 'disk'")
    with op.batch_alter_table("artifacts") as batch_op:
        for column in ("error", "stored", "location"):
            batch_op.drop_column(column)
