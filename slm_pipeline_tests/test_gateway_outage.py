"""A log-store outage loses nothing: calls spool (sealed) while the database is down and replay once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key
from slm_pipeline_tests.servers import TempPostgres

CANARY = "outage-canary-5551234567"


@pytest.fixture
def private_postgres() -> Iterator[TempPostgres]:
    server = TempPostgres()
    yield server
    server.remove()


async def load(url: str, key: str, stop: threading.Event, clients: int, call_ids: list[str],
               statuses: list[int]) -> None:
    """`clients` concurrent agents sending calls until `stop` is set."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"order for {CANARY}"}]}

    async def agent(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            reply = await client.post("/v1/chat/completions", json=body)
            statuses.append(reply.status_code)
            call_ids.append(reply.headers.get("x-slm-call-id", ""))

    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        await asyncio.gather(*(agent(client) for _ in range(clients)))


def wait_for(condition, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def spooled_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*.jsonl"))


def test_calls_spool_while_postgres_is_down_and_replay_without_duplicates(private_postgres: TempPostgres,
                                                                          run_gateway, tmp_path: Path):
    with LogStore(private_postgres.url) as owner:
        _, key = create_key(owner, "support-bot")
    spool = tmp_path / "spool"
    call_ids: list[str] = []
    statuses: list[int] = []
    config = {"retry_interval_s": 0.2, "batch_size": 50, "flush_interval_s": 0.02, "key_refresh_s": 0.5}

    with run_gateway(private_postgres.url, **config) as gw:
        stop = threading.Event()
        loader = threading.Thread(target=asyncio.run, args=(load(gw.url, key, stop, 16, call_ids, statuses),))
        loader.start()
        wait_for(lambda: gw.call_log.stats.inserted >= 100)
        private_postgres.stop()  # mid-load
        wait_for(lambda: gw.call_log.stats.spooled >= 200)
        sent_while_down = len(statuses)
        assert not gw.call_log.stats.store_up
        assert CANARY.encode() not in spooled_bytes(spool)  # the spool holds sealed rows only
        health = httpx.get(f"{gw.url}/healthz").json()
        wait_for(lambda: len(statuses) >= sent_while_down + 100)
        stop.set()
        loader.join(30)
        first_stats = gw.call_log.stats
    # the gateway stopped while the store was still down: what was queued went to the spool
    assert health["store"] == "down" and health["last_store_error"]
    assert set(statuses) == {200}, "agents kept being served during the outage"
    assert spooled_bytes(spool)

    private_postgres.start()
    with run_gateway(private_postgres.url, **config) as gw:  # a new gateway process replays the spool
        wait_for(lambda: gw.call_log.stats.store_up and not gw.call_log.spool.has_rows())
        replayed = gw.call_log.stats.replayed
    assert replayed == first_stats.spooled - first_stats.replayed

    with LogStore(private_postgres.url) as owner, owner.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT call_id FROM agent_calls")).scalars().all()
    assert len(stored) == len(set(stored)) == len(call_ids)  # nothing lost, nothing twice
    assert set(stored) == set(call_ids)
    assert first_stats.submitted == len(call_ids)
    assert not list(spool.glob("*.jsonl")) and not list((spool / "rejected").glob("*.jsonl"))
