"""photon_names: the highest version given to each photon name, so numbers are never reused

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photon_names",
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workspace_id", "name"),
    )
    op.execute(
        "INSERT INTO photon_names (workspace_id, name, last_version) "
        "SELECT workspace_id, name, MAX(version) FROM photons GROUP BY workspace_id, name"
    )


def downgrade() -> None:
    op.drop_table("photon_names")
