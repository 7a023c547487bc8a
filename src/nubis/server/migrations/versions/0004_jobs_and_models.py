"""jobs, their workers and events; the model registry; compute quotas of workspaces; deployment-scoped tokens

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _workspace() -> sa.Column:
    return sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                     nullable=False, index=True)


def _job() -> sa.Column:
    return sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                     nullable=False, index=True)


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("deployment", sa.String(63), nullable=True))
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("cpu_quota", sa.Float(), nullable=True))
        batch.add_column(sa.Column("memory_quota", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("gpu_quota", sa.Integer(), nullable=True))
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        _workspace(),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.String(2048), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_start_at", sa.Float(), nullable=True),
        sa.Column("attempt_started_at", sa.Float(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("stop_outcome", sa.String(32), nullable=True),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("model_ref", sa.String(128), nullable=True),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "job_workers",
        sa.Column("id", sa.String(64), primary_key=True),
        _job(),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(2048), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("handle", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _job(),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("message", sa.String(2048), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(32), primary_key=True),
        _workspace(),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("arch", sa.String(32), nullable=True),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("comparison", sa.JSON(), nullable=True),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("workspace_id", "name", "version"),
    )
    op.create_table(
        "model_names",
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("last_version", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in ("model_names", "model_versions", "job_events", "job_workers", "jobs"):
        op.drop_table(table)
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("deployment")
    with op.batch_alter_table("workspaces") as batch:
        for column in ("gpu_quota", "memory_quota", "cpu_quota"):
            batch.drop_column(column)
