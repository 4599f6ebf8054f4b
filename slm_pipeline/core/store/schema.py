"""Tables of the log store (SQLAlchemy Core). Changes go through an Alembic migration."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# An autoincrementing 64-bit key on Postgres, SQLite's rowid alias on SQLite.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

agent_calls = sa.Table(
    "agent_calls",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),  # arrival order: the lake's watermark
    sa.Column("call_id", sa.String(128), nullable=False, unique=True),  # idempotency key
    sa.Column("agent_id", sa.String(128), nullable=False),
    sa.Column("workload_id", sa.String(256)),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("latency_ms", sa.Float),
    sa.Column("human_facing", sa.Boolean),
    sa.Column("status", sa.String(16), nullable=False),  # 'ok', or 'error' when the response is an error object
    sa.Column("model", sa.String(256)),  # request.model: the teacher LLM
    sa.Column("tags", sa.JSON),
    sa.Column("request_payload", sa.LargeBinary, nullable=False),  # the OpenAI request, JSON bytes
    sa.Column("response_payload", sa.LargeBinary, nullable=False),  # the OpenAI response, JSON bytes
    sa.Column("payload_key_id", sa.String(64)),  # the key that sealed the payloads; NULL: stored plain
    sa.Column("source", sa.String(512), nullable=False),  # import:<file>, or gateway
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_agent_calls_agent_seq", "agent_id", "seq"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),  # the public part of a key: `slm_<key_id>_<secret>`
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # SHA-256 of the whole key, hex
    sa.Column("agent_id", sa.String(128), nullable=False),  # every call made with the key is this agent's
    sa.Column("human_facing", sa.Boolean, nullable=False),  # default for calls that do not say
    sa.Column("description", sa.String(256)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Index("ix_api_keys_agent", "agent_id"),
)
