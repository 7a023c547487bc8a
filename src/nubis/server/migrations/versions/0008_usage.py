"""usage intervals: which replica or job worker held which resources from when to when

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_intervals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("object_name", sa.String(63), nullable=False),
        sa.Column("object_id", sa.String(32), nullable=False),
        sa.Column("unit_id", sa.String(64), nullable=False, index=True),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory_gib", sa.Float(), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False, index=True),
        sa.Column("stopped_at", TS, nullable=True, index=True),
    )


def downgrade() -> None:
    op.drop_table("usage_intervals")
