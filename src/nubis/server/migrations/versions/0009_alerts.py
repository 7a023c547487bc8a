"""alerts: per-workspace rule settings, alert states, silences, webhooks and delivery attempts

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _workspace(primary_key: bool = False) -> sa.Column:
    return sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                     nullable=False, primary_key=primary_key, index=not primary_key)


def upgrade() -> None:
    op.create_table(
        "alert_rule_settings",
        _workspace(primary_key=True),
        sa.Column("rule", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "alert_states",
        _workspace(primary_key=True),
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("object", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("last_notified_at", TS, nullable=True),
        sa.Column("summary", sa.String(1024), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.String(32), primary_key=True),
        _workspace(),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("object", sa.String(200), nullable=True),
        sa.Column("until", TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("comment", sa.String(500), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "alert_webhooks",
        _workspace(primary_key=True),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("url_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("url_box", sa.LargeBinary(), nullable=False),
        sa.Column("secret_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("secret_box", sa.LargeBinary(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("delivery", sa.String(32), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("object", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("at", TS, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in ("alert_deliveries", "alert_webhooks", "alert_silences", "alert_states", "alert_rule_settings"):
        op.drop_table(table)
