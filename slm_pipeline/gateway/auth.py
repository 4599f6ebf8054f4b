"""Agents authenticate with their own API key; the agent id comes from the key, never from the request."""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa

from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import ApiKey, active_keys, find_key, hash_key, looks_like_key
from slm_pipeline.gateway.errors import unauthorized

log = logging.getLogger(__name__)


class KeyCache:
    """The active keys, reloaded every `refresh_s` (so a revoked key stops working within it).

    While the store is unreachable the last loaded keys stay in force, so agents keep working and
    their calls spool. A well-formed key that is not loaded (just created) is looked up by its hash,
    once per reload period.
    """

    def __init__(self, store: LogStore, refresh_s: float = 2.0) -> None:
        self.store, self.refresh_s = store, refresh_s
        self._keys: dict[str, ApiKey] = {}
        self._loaded_at = 0.0
        self._unknown: set[str] = set()  # hashes looked up and not found since the last reload
        self._lock = asyncio.Lock()

    def load(self) -> None:
        self._keys = active_keys(self.store)
        self._unknown = set()
        self._loaded_at = time.monotonic()

    async def _lookup(self, digest: str) -> ApiKey | None:
        """One key not loaded yet (created since the last reload); each unknown hash is asked once per reload."""
        if digest in self._unknown:
            return None
        self._unknown.add(digest)
        try:
            found = await asyncio.to_thread(find_key, self.store, digest)
        except sa.exc.DBAPIError:
            return None
        if found is not None:
            self._keys = {**self._keys, digest: found}
        return found

    async def reload(self) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self.load)
            except sa.exc.DBAPIError as exc:
                self._loaded_at = time.monotonic()
                log.warning("cannot reload API keys (%s); keeping the %d loaded", exc.__class__.__name__,
                            len(self._keys))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.reload()

    async def authenticate(self, authorization: str | None) -> ApiKey:
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise unauthorized("You didn't provide an API key. Send `Authorization: Bearer <key>` with a key from "
                               "`slm-pipeline keys create --agent NAME`.")
        digest = hash_key(key)
        found = self._keys.get(digest)
        if found is None and looks_like_key(key):
            found = await self._lookup(digest)
        if found is None:
            raise unauthorized(f"Incorrect or revoked API key provided: {key[:8]}****.")
        return found


