"""API keys of the gateway: one or more per agent, stored as SHA-256 hashes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("human_facing", sa.Boolean, nullable=False),
        sa.Column("description", sa.String(256)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_keys_agent", "api_keys", ["agent_id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_agent", table_name="api_keys")
    op.drop_table("api_keys")
