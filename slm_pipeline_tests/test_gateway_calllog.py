"""The call log never blocks and never drops: a full queue spools, a refused row is set aside, not the batch."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import sqlalchemy as sa

from slm_pipeline.core.store import LogStore
from slm_pipeline.gateway.calllog import CallLog, FinishedCall, seal
from slm_pipeline.gateway.spool import Spool


def finished(n: int, **changes) -> FinishedCall:  # noqa: ANN003
    call = FinishedCall(call_id=f"gw-{n:04d}", agent_id="support-bot", timestamp=datetime.now(timezone.utc),
                        latency_ms=1.0, human_facing=False, workload_id=None, model="gpt-4o", tags={"route": "llm"},
                        request=orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": f"call {n}"}]}),
                        response=b'{"choices": [{"message": {"role": "assistant", "content": "ok"}}]}')
    for name, value in changes.items():
        setattr(call, name, value)
    return call


def count(store_url: str) -> int:
    with LogStore(store_url) as store:
        return store.count()


def test_a_full_queue_spools_and_the_spool_replays(store_url: str, key_ring, tmp_path: Path):
    call_log = CallLog(LogStore(store_url), key_ring, Spool(tmp_path / "spool"), queue_size=5)
    for n in range(40):  # the writer is not started: the queue fills, then every call spools
        call_log.submit(finished(n))
    assert call_log.stats.overflow == 35 and call_log.stats.spooled == 35 and call_log.queued == 5
    call_log.start()
    assert call_log.flush()
    call_log.close()
    stats = call_log.stats
    assert count(store_url) == 40 and stats.submitted == 40
    assert stats.inserted == 40 and stats.replayed == 35 and stats.duplicate == 0
    assert not call_log.spool.has_rows()


def test_a_row_the_store_refuses_is_set_aside_and_the_rest_of_its_batch_is_stored(store_url: str, key_ring,
                                                                                  tmp_path: Path):
    call_log = CallLog(LogStore(store_url), key_ring, Spool(tmp_path / "spool")).start()
    calls = [finished(n) for n in range(10)]
    calls[3].workload_id = "w" * 300  # longer than the column: Postgres refuses it
    for call in calls:
        call_log.submit(call)
    assert call_log.flush()
    call_log.close()
    refused = 1 if store_url.startswith("postgresql") else 0  # SQLite does not enforce lengths
    assert call_log.stats.rejected == refused and count(store_url) == 10 - refused
    assert call_log.stats.inserted + call_log.stats.rejected == 10
    if refused:
        kept = list((tmp_path / "spool" / "rejected").glob("*.jsonl"))
        assert len(kept) == 1 and b"gw-0003" in kept[0].read_bytes() and b"call 3" not in kept[0].read_bytes()


def test_an_answer_that_is_not_a_completion_is_logged_as_a_failed_call(key_ring):
    row = seal(finished(1, response=b'{"unexpected": true}'), key_ring)
    assert row["status"] == "error" and row["payload_key_id"] == "k1"
    response = key_ring.decrypt("k1", row["response_payload"], row["call_id"])
    assert b"invalid_upstream_response" in response and b'"unexpected":true' in response


def test_a_torn_spool_line_is_skipped_and_the_rest_replays(tmp_path: Path, key_ring):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    spool = Spool(tmp_path / "spool")
    spool.append([seal(finished(n), key_ring) for n in range(3)])
    with spool.path.open("ab") as handle:
        handle.write(b'{"call_id": "gw-torn", "agent_')  # a crash mid-write
    with LogStore(url) as store:
        read, inserted = spool.replay(store.append)
        assert (read, inserted) == (3, 3) and store.count() == 3
        again = Spool(tmp_path / "spool")
        again.append([seal(finished(n), key_ring) for n in range(3)])
        assert again.replay(store.append) == (3, 0)  # replaying twice stores nothing twice
        with store.engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT count(DISTINCT call_id) FROM agent_calls")) == 3
