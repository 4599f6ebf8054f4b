"""Encryption at rest for call payloads: AES-256-GCM with a key ring that supports rotation.

Keys come from the environment, never from config files in the repository:

* `SLM_PIPELINE_ENCRYPTION_KEYS`: comma-separated `key_id:base64_key` pairs; the first encrypts,
  all decrypt (rotate by putting a new key first and keeping the old ones until no row uses them);
* or `SLM_PIPELINE_ENCRYPTION_KEY_FILE`: a file with the same content, one pair per line.

A stored payload is `nonce (12 bytes) || ciphertext+tag`, with the call id as associated data, so a
payload copied onto another row does not decrypt. Each row keeps the id of the key that sealed it.
Generate a key with `slm-pipeline new-encryption-key`.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYS_ENV = "SLM_PIPELINE_ENCRYPTION_KEYS"
KEY_FILE_ENV = "SLM_PIPELINE_ENCRYPTION_KEY_FILE"


class KeyRingError(RuntimeError):
    """A key ring that cannot be used; the message says what to fix."""


def new_key(key_id: str | None = None) -> str:
    """A fresh `key_id:base64_key` pair for the key ring."""
    return f"{key_id or 'k' + secrets.token_hex(4)}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, bytes]  # key id -> 32-byte key, in order: the first is active

    @property
    def active_id(self) -> str:
        return next(iter(self.keys))

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        keys: dict[str, bytes] = {}
        for item in (part.strip() for line in text.splitlines() for part in line.split(",")):
            if not item or item.startswith("#"):
                continue
            key_id, sep, encoded = item.partition(":")
            if not sep or not key_id:
                raise KeyRingError(f"encryption key entry {item[:12]!r}... is not `key_id:base64_key`")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise KeyRingError(f"encryption key {key_id!r} is not valid base64") from None
            if len(key) != 32:
                raise KeyRingError(f"encryption key {key_id!r} has {len(key)} bytes; AES-256 needs 32")
            keys[key_id] = key
        if not keys:
            raise KeyRingError("the encryption key ring is empty")
        return cls(keys)

    @classmethod
    def from_environment(cls) -> KeyRing | None:
        """The configured key ring, or None when encryption is not configured."""
        if os.environ.get(KEYS_ENV):
            return cls.parse(os.environ[KEYS_ENV])
        if os.environ.get(KEY_FILE_ENV):
            path = Path(os.environ[KEY_FILE_ENV])
            if not path.is_file():
                raise KeyRingError(f"{KEY_FILE_ENV}={path} does not exist")
            return cls.parse(path.read_text())
        return None

    @cached_property
    def _ciphers(self) -> dict[str, AESGCM]:  # built once: AESGCM(key) expands the key schedule
        return {key_id: AESGCM(key) for key_id, key in self.keys.items()}

    def encrypt(self, plaintext: bytes, associated: str) -> tuple[str, bytes]:
        nonce = os.urandom(12)
        return self.active_id, nonce + self._ciphers[self.active_id].encrypt(nonce, plaintext, associated.encode())

    def require(self, key_id: str) -> None:
        """Raise, saying what to do, unless the ring holds `key_id`."""
        if key_id not in self.keys:
            raise KeyRingError(f"payload sealed with key {key_id!r}, which is not in the key ring; add it to "
                               f"{KEYS_ENV} (keep retired keys until no row uses them)")

    def decrypt(self, key_id: str, sealed: bytes, associated: str) -> bytes:
        self.require(key_id)
        return self._ciphers[key_id].decrypt(sealed[:12], sealed[12:], associated.encode())
