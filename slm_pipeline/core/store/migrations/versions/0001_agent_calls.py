"""The call log: one row per agent LLM call.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agent_calls",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("workload_id", sa.String(256)),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("human_facing", sa.Boolean),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("tags", sa.JSON),
        sa.Column("request_payload", sa.LargeBinary, nullable=False),
        sa.Column("response_payload", sa.LargeBinary, nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_agent_calls_agent_seq", "agent_calls", ["agent_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_agent_calls_agent_seq", table_name="agent_calls")
    op.drop_table("agent_calls")
