"""Encryption at rest: each call row records the id of the key that sealed its payloads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_calls") as batch:
        batch.add_column(sa.Column("payload_key_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("agent_calls") as batch:
        batch.drop_column("payload_key_id")
