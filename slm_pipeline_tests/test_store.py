from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from slm_pipeline.core.store import LogStore, StoredCall, normalise_url
from slm_pipeline.core.store.migrate import VERSION_TABLE, current_revision, head_revision
from slm_pipeline.core.store.schema import metadata


def call(call_id: str, agent: str = "a1") -> StoredCall:
    now = datetime(2026, 10, 1, tzinfo=timezone.utc)
    return StoredCall(call_id=call_id, agent_id=agent, workload_id=None, timestamp=now, latency_ms=1.0,
                      human_facing=None, status="ok", model="m", tags={"k": "v"}, request_payload=b"{}",
                      response_payload=b"{}", payload_key_id=None, source="test", ingested_at=now)


def test_migrations_reach_head_and_match_the_tables(store: LogStore):
    with store.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        diff = [d for d in compare_metadata(context, metadata) if not (d[0] == "remove_table")]
        assert diff == []
        assert VERSION_TABLE in sa.inspect(connection).get_table_names()


def test_insert_is_idempotent_and_watermarks_follow_arrival(store: LogStore):
    assert store.insert([call("x"), call("y"), call("z", "a2")]) == {"x", "y", "z"}
    assert store.insert([call("x"), call("w")]) == {"w"}
    marks = store.watermarks()
    assert set(marks) == {"a1", "a2"} and marks["a1"] > marks["a2"]
    assert store.agents() == ["a1", "a2"]
    assert store.count("a1") == 3 and store.count() == 4


def test_iter_calls_pages_in_seq_order_within_bounds(store: LogStore):
    store.insert([call(f"c{i:03d}") for i in range(25)])
    batches = list(store.iter_calls("a1", batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    seqs = [row["seq"] for batch in batches for row in batch]
    assert seqs == sorted(seqs)
    middle = list(store.iter_calls("a1", after_seq=seqs[4], up_to_seq=seqs[9]))
    assert [row["seq"] for batch in middle for row in batch] == seqs[5:10]


def test_concurrent_opens_migrate_once(store_url: str):
    def open_and_count(_: int) -> int:
        with LogStore(store_url) as opened:
            return opened.count()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_and_count, range(4))) == [0, 0, 0, 0]


def test_plain_postgres_urls_use_psycopg3():
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_concurrent_writers_commit_in_seq_order(store: LogStore):
    """S1 collects up to the highest `seq` it sees: a call committed later with a lower seq would be
    skipped for good. Every snapshot (highest seq, calls at or below it) must still hold at the end."""
    writers, batches, size = 4, 15, 40
    done = False
    snapshots: list[tuple[int, int]] = []

    def write(writer: int) -> None:
        for batch in range(batches):
            rows = [call(f"w{writer}-{batch}-{i}") for i in range(size)]
            if batch % 2:
                store.append(rows)
            else:
                store.insert(rows)

    def read() -> None:
        while not done:
            top = store.watermarks().get("a1", 0)
            snapshots.append((top, store.count("a1", up_to_seq=top)))

    with ThreadPoolExecutor(writers + 1) as pool:
        reader = pool.submit(read)
        list(pool.map(write, range(writers)))
        done = True
        reader.result()
    assert store.count("a1") == writers * batches * size
    assert len(snapshots) > 10
    late = [(top, seen, store.count("a1", up_to_seq=top)) for top, seen in snapshots
            if store.count("a1", up_to_seq=top) != seen]
    assert late == [], f"calls committed below a seq already seen (seq, seen then, there now): {late[:5]}"
