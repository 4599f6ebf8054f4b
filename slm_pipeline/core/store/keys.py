"""API keys of the gateway: each key belongs to one agent and is stored only as its SHA-256 hash.

A key reads `slm_<key_id>_<secret>`: `key_id` is public (it names the key in listings, logs and
`keys revoke`), `secret` is 32 random bytes. The store keeps the hash of the whole key, so a
database dump does not give working keys. The keys are random, so a fast hash is enough (as for
GitHub's or Stripe's tokens): there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from slm_pipeline.core.records import AGENT_ID_PATTERN
from slm_pipeline.core.store.logstore import LogStore
from slm_pipeline.core.store.schema import api_keys

_KEY = re.compile(r"^slm_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


class ApiKeyError(ValueError):
    """An API-key operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    agent_id: str
    human_facing: bool
    description: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


_COLUMNS = [api_keys.c[name] for name in ApiKey.__dataclass_fields__]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(key: str) -> bool:
    return _KEY.match(key) is not None


def create_key(store: LogStore, agent_id: str, *, human_facing: bool = False,
               description: str | None = None) -> tuple[ApiKey, str]:
    """A new key for `agent_id`: (its record, the key itself, shown once and never stored)."""
    if not re.match(AGENT_ID_PATTERN, agent_id) or "..." in agent_id:
        raise ApiKeyError(f"agent id {agent_id!r} is not valid: use letters, digits, '.', '_' or '-' "
                        "(up to 128 characters, starting with a letter or digit)")
    key_id = secrets.token_hex(6)
    key = f"slm_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(key_id, agent_id, human_facing, description, datetime.now(timezone.utc), None)
    with store.engine.begin() as connection:
        connection.execute(api_keys.insert().values(key_hash=hash_key(key), **record.__dict__))
    return record, key


def revoke_key(store: LogStore, key_id: str) -> ApiKey:
    """Revoke a key by its id; the gateway refuses it from its next key refresh on."""
    with store.engine.begin() as connection:
        row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
        if row is None:
            raise ApiKeyError(f"no API key with id {key_id!r}; `slm-pipeline keys list` shows the ids")
        if row["revoked_at"] is None:
            connection.execute(api_keys.update().where(api_keys.c.key_id == key_id)
                               .values(revoked_at=datetime.now(timezone.utc)))
    return next(k for k in list_keys(store) if k.key_id == key_id)


def list_keys(store: LogStore, agent_id: str | None = None) -> list[ApiKey]:
    query = sa.select(*_COLUMNS).order_by(api_keys.c.created_at)
    if agent_id is not None:
        query = query.where(api_keys.c.agent_id == agent_id)
    with store.engine.connect() as connection:
        return [ApiKey(**row) for row in connection.execute(query).mappings()]


def find_key(store: LogStore, key_hash: str) -> ApiKey | None:
    """The active key with this hash, if any."""
    query = sa.select(*_COLUMNS).where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
    with store.engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return ApiKey(**row) if row else None


def active_keys(store: LogStore) -> dict[str, ApiKey]:
    """Key hash -> key, for the keys that are not revoked."""
    query = sa.select(api_keys.c.key_hash, *_COLUMNS).where(api_keys.c.revoked_at.is_(None))
    with store.engine.connect() as connection:
        return {row.key_hash: ApiKey(*row[1:]) for row in connection.execute(query)}
