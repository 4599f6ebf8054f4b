"""Identity and access: hashed per-agent keys, and least-privilege Postgres roles tested with real GRANTs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from slm_pipeline.cli import app
from slm_pipeline.core.collect import collect_new_calls
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import ApiKeyError, active_keys, create_key, hash_key, list_keys, revoke_key
from slm_pipeline.core.store.roles import RoleError, grant_roles
from slm_pipeline.core.store.schema import api_keys
from slm_pipeline_tests.conftest import ADMIN_URL


def test_keys_are_stored_hashed_and_revocable(store: LogStore):
    record, key = create_key(store, "support-bot", description="prod agent")
    _, other = create_key(store, "support-bot", human_facing=True)
    with store.engine.connect() as connection:
        dump = " ".join(str(v) for row in connection.execute(sa.select(api_keys)) for v in row)
    assert key not in dump and other not in dump and hash_key(key) in dump
    assert key.startswith(f"slm_{record.key_id}_")
    assert {k.agent_id for k in active_keys(store).values()} == {"support-bot"}
    revoked = revoke_key(store, record.key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert hash_key(key) not in active_keys(store) and hash_key(other) in active_keys(store)
    assert [k.human_facing for k in list_keys(store, "support-bot")] == [False, True]
    with pytest.raises(ApiKeyError, match="no API key with id 'nope'"):
        revoke_key(store, "nope")
    with pytest.raises(ApiKeyError, match="not valid"):
        create_key(store, "../etc")


def test_keys_cli_creates_lists_and_revokes(embedded_home):
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--agent", "travel-planner", "--description", "ci"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    listed = runner.invoke(app, ["keys", "list"])
    assert key_id in listed.stdout and "travel-planner" in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    unknown = runner.invoke(app, ["keys", "revoke", "feedfeedfeed"])
    assert unknown.exit_code == 2 and "keys list" in unknown.output
    assert "need a Postgres" in runner.invoke(app, ["db-roles", "--gateway-role", "gw"]).output


@pytest.fixture
def roles(pg_url: str) -> Iterator[tuple[str, str]]:
    """Two fresh Postgres roles (gateway, pipeline); dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"slm_gw_{suffix}", f"slm_pipe_{suffix}")
    yield names
    with psycopg.connect(pg_url, autocommit=True) as connection:
        existing = [n for n in names if connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (n,)).fetchone()]
        sequence = connection.execute("SELECT pg_get_serial_sequence('agent_calls', 'seq')").fetchone()[0]
        for name in existing:  # what grant_roles gave, so that the roles can be dropped
            connection.execute(f"REVOKE ALL ON agent_calls, api_keys, slm_pipeline_alembic_version FROM {name}")
            connection.execute(f"REVOKE ALL ON SEQUENCE {sequence} FROM {name}")
            connection.execute(f"REVOKE ALL ON SCHEMA public FROM {name}")
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        for name in existing:
            connection.execute(f"DROP ROLE {name}")


def as_role(url: str, role: str) -> str:
    return sa.make_url(url).set(username=role).render_as_string(hide_password=False)


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)  # roles exist on Postgres only
def test_the_gateway_role_inserts_calls_but_cannot_read_them(store_url: str, roles, run_gateway, key_ring, tmp_path):
    gateway_role, pipeline_role = roles
    with LogStore(store_url) as owner:
        with pytest.raises(RoleError, match="does not exist"):
            grant_roles(owner, gateway=gateway_role)
        grants = grant_roles(owner, gateway=gateway_role, pipeline=pipeline_role, create=True)
        _, key = create_key(owner, "support-bot")
    assert [(g.kind, g.created) for g in grants] == [("gateway", True), ("pipeline", True)]

    # the real gateway, connected as its role, logs calls
    gateway_url = as_role(store_url, gateway_role)
    with run_gateway(gateway_url) as gw:
        reply = httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                           json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert gw.call_log.flush()
        assert gw.call_log.stats.inserted == 1 and gw.call_log.stats.spooled == 0
    assert reply.status_code == 200

    with LogStore(gateway_url, create=False) as gateway_store:
        gateway_store.check_schema()
        assert len(active_keys(gateway_store)) == 1  # it may read keys, to authenticate agents
        for query in ("SELECT request_payload FROM agent_calls", "SELECT count(*) FROM agent_calls",
                      "SELECT call_id FROM agent_calls", "UPDATE agent_calls SET status = 'x'",
                      "DELETE FROM agent_calls", "INSERT INTO api_keys (key_id) VALUES ('x')"):
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), \
                    gateway_store.engine.begin() as connection:
                connection.execute(sa.text(query))
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            gateway_store.watermarks()

    # the pipeline's role reads the calls (and decrypts them with the key ring), but not the keys
    with LogStore(as_role(store_url, pipeline_role), create=False) as pipeline_store:
        result = collect_new_calls(pipeline_store, Lake(str(tmp_path / "lake")), "support-bot", key_ring=key_ring)
        assert result.new_rows == 1
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            active_keys(pipeline_store)
