"""Encryption at rest: payloads sealed in the store, readable with the key ring, through a rotation."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag

from slm_pipeline.core.collect import RAW_TABLE, collect_new_calls, open_payloads
from slm_pipeline.core.crypto import KeyRing, KeyRingError, new_key
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore
from slm_pipeline_tests.test_records import record

SECRET = "jane.canary@gmail.com"


def traffic(path: Path, prefix: str) -> Path:
    raws = [record(call_id=f"{prefix}-{i}") for i in range(5)]
    for raw in raws:
        raw["request"]["messages"][1]["content"] = f"Where is ORD-1? Mail {SECRET}"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in raws))
    return path


def test_seal_and_open_bind_the_call_id():
    ring = KeyRing.parse(new_key("k1"))
    key_id, sealed = ring.encrypt(b'{"a": 1}', "call-1")
    assert key_id == "k1" and b'"a"' not in sealed
    assert ring.decrypt("k1", sealed, "call-1") == b'{"a": 1}'
    with pytest.raises(InvalidTag):
        ring.decrypt("k1", sealed, "call-2")  # copied onto another row: does not open


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("nocolon", "is not `key_id:base64_key`"), ("k1:not*base64", "not valid base64"),
    ("k1:c2hvcnQ=", "AES-256 needs 32"),
])
def test_bad_key_rings_say_what_is_wrong(text, message):
    with pytest.raises(KeyRingError, match=message):
        KeyRing.parse(text)


def test_the_database_never_holds_plaintext_and_rotation_keeps_old_rows_readable(store_url, tmp_path: Path):
    first, second = new_key("k1"), new_key("k2")
    lake = Lake(str(tmp_path / "lake"))
    with LogStore(store_url) as store:
        import_files(store, [traffic(tmp_path / "a.jsonl", "a")], tmp_path / "q", key_ring=KeyRing.parse(first))
        rotated = KeyRing.parse(f"{second},{first}")  # k2 seals from now on, k1 still opens
        import_files(store, [traffic(tmp_path / "b.jsonl", "b")], tmp_path / "q", key_ring=rotated)
        with store.engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT payload_key_id, request_payload FROM agent_calls")).all()
        assert sorted({r[0] for r in rows}) == ["k1", "k2"]
        assert all(SECRET.encode() not in bytes(r[1]) for r in rows)

        with pytest.raises(KeyRingError, match="'k1', which is not in the key ring"):
            collect_new_calls(store, lake, "support-bot", key_ring=KeyRing.parse(second))
        result = collect_new_calls(store, lake, "support-bot", key_ring=rotated)
        assert result.new_rows == 10
        frame = lake.read(RAW_TABLE, "support-bot")
        # The raw lake keeps the store's ciphertext (same key ids); only S2 opens it, in memory.
        assert {r.split(":")[1] for r in frame["request"]} == {"k1", "k2"}
        assert not any(SECRET in value for value in frame["request"])
        opened = open_payloads(frame, rotated)
        assert all(SECRET in orjson.loads(r)["messages"][1]["content"] for r in opened["request"])
        with pytest.raises(KeyRingError, match="no key ring is configured"):
            open_payloads(frame, None)


def test_without_a_key_ring_encrypted_rows_give_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("SLM_PIPELINE_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("SLM_PIPELINE_ENCRYPTION_KEY_FILE", raising=False)
    with LogStore(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        import_files(store, [traffic(tmp_path / "a.jsonl", "a")], tmp_path / "q", key_ring=KeyRing.parse(new_key("k1")))
        with pytest.raises(KeyRingError, match="no key ring is configured: set SLM_PIPELINE_ENCRYPTION_KEYS"):
            collect_new_calls(store, Lake(str(tmp_path / "lake")), "support-bot")
        assert SECRET.encode() not in (tmp_path / "s.sqlite").read_bytes()


def test_the_key_ring_comes_from_the_environment_or_a_file(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("SLM_PIPELINE_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("SLM_PIPELINE_ENCRYPTION_KEY_FILE", raising=False)
    assert KeyRing.from_environment() is None
    path = tmp_path / "keys"
    path.write_text(f"# active first\n{new_key('k9')}\n{new_key('k8')}\n")
    monkeypatch.setenv("SLM_PIPELINE_ENCRYPTION_KEY_FILE", str(path))
    assert KeyRing.from_environment().active_id == "k9"
    monkeypatch.setenv("SLM_PIPELINE_ENCRYPTION_KEYS", new_key("k7"))
    assert KeyRing.from_environment().active_id == "k7"
