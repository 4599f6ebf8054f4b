"""Faults and load: a real Postgres restarted under the importer, the gateway and a Dagster run; the
gateway under sustained open-loop load. Nothing is mocked: private Postgres servers (`initdb` on their
own port), the real `slm-pipeline` processes, real uvicorn, a real Dagster instance."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest
import sqlalchemy as sa

from slm_pipeline.core.crypto import new_key
from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import _Rejected, import_files, parse_line
from slm_pipeline.core.records import call_id_of
from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key
from slm_pipeline_tests.servers import TempPostgres
from slm_pipeline_tests.test_gateway_outage import load, spooled_bytes, wait_for

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def private_postgres() -> Iterator[TempPostgres]:
    server = TempPostgres()
    yield server
    server.remove()


def stored_call_ids(url: str) -> list[str]:
    with LogStore(url) as store, store.engine.connect() as connection:
        return connection.execute(sa.text("SELECT call_id FROM agent_calls")).scalars().all()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLM_PIPELINE_", "DAGSTER_"))}
    return {**env, **extra}


# --- a. Postgres restarted in the middle of `slm-pipeline import` ------------------------------------

BAD_LINES = [b'{"agent_id": "support-bot", "timestamp": ', b"[1, 2, 3]",
             b'{"agent_id": "support-bot", "timestamp": "2026-01-01T00:00:00Z"}']


def expected_call_ids(path: Path) -> tuple[int, set[str], int]:
    """(records, distinct valid call ids, invalid records) of a file, computed without any store."""
    records, ids, invalid = 0, set(), 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            records += 1
            try:
                record, raw = parse_line(line.rstrip(b"\n"))
            except _Rejected:
                invalid += 1
                continue
            ids.add(call_id_of(record, raw))
    return records, ids, invalid


def test_import_cut_by_a_postgres_restart_fails_clearly_and_a_rerun_completes_it(private_postgres: TempPostgres,
                                                                                  tmp_path: Path):
    traffic = tmp_path / "traffic.jsonl"
    demo = tmp_path / "demo.jsonl"
    write_demo_traffic(demo, calls=20_000, seed=5)
    traffic.write_bytes(b"\n".join(BAD_LINES) + b"\n" + demo.read_bytes())  # 3 bad records, then the demo's
    records, expected, invalid = expected_call_ids(traffic)
    assert invalid == len(BAD_LINES) and len(expected) < records - invalid  # the demo logs some calls twice
    LogStore(private_postgres.url).close()  # the schema, before the clock starts
    env = clean_env(SLM_PIPELINE_HOME=str(tmp_path / "home"), SLM_PIPELINE_DATABASE_URL=private_postgres.url,
                    SLM_PIPELINE_ENCRYPTION_KEYS=new_key("k1"), COLUMNS="200")
    command = [str(BIN / "slm-pipeline"), "import", "--json", str(traffic)]

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with psycopg.connect(private_postgres.url, autocommit=True) as probe:
        wait_for(lambda: probe.execute("SELECT count(*) FROM agent_calls").fetchone()[0] > 0, timeout=60)
    private_postgres.stop()  # mid-import: the first batch is in, 18,000 records are not
    time.sleep(1.5)
    private_postgres.start()
    _, stderr = first.communicate(timeout=120)
    message = " ".join(stderr.split())
    assert first.returncode == 2, stderr
    assert "Traceback" not in stderr and "OperationalError" not in message
    assert "the log store stopped answering during the import (at traffic.jsonl, line" in message
    assert "re-run the same import once the store answers" in message
    partial = stored_call_ids(private_postgres.url)
    assert 0 < len(partial) < len(expected)

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    stored = stored_call_ids(private_postgres.url)
    assert len(stored) == len(set(stored)) == len(expected)  # every valid call once, no duplicates
    assert set(stored) == expected and set(partial) <= expected
    assert report["read"] == records  # what came in = stored now + duplicates + quarantined
    assert report["read"] == report["imported"] + report["duplicate"] + report["quarantined"]
    assert report["quarantined"] == invalid
    assert report["imported"] == len(expected) - len(partial)
    assert report["duplicate"] == (records - invalid - len(expected)) + len(partial)


# --- b. Postgres restarted under gateway load: the same gateway spools, then replays by itself ---------

def test_the_same_gateway_serves_through_a_postgres_restart_and_replays_its_spool(private_postgres: TempPostgres,
                                                                                  run_gateway, tmp_path: Path):
    with LogStore(private_postgres.url) as owner:
        _, key = create_key(owner, "support-bot")
    spool = tmp_path / "spool"
    call_ids: list[str] = []
    statuses: list[int] = []
    config = {"retry_interval_s": 0.2, "batch_size": 50, "flush_interval_s": 0.02, "key_refresh_s": 0.5}

    with run_gateway(private_postgres.url, **config) as gw:
        stats = gw.call_log.stats
        stop = threading.Event()
        loader = threading.Thread(target=asyncio.run, args=(load(gw.url, key, stop, 16, call_ids, statuses),))
        loader.start()
        try:
            wait_for(lambda: stats.inserted >= 100)
            private_postgres.stop()  # mid-load
            outage_began = time.monotonic()
            wait_for(lambda: stats.spooled >= 100)
            assert not stats.store_up and httpx.get(f"{gw.url}/healthz").json()["store"] == "down"
            assert spooled_bytes(spool)
            time.sleep(max(0.0, 1.5 - (time.monotonic() - outage_began)))
            private_postgres.start()  # the same gateway must notice and replay on its own
            wait_for(lambda: stats.store_up and stats.replayed > 0 and not gw.call_log.spool.has_rows())
            answered_after_replay = len(statuses)
            wait_for(lambda: len(statuses) >= answered_after_replay + 200)  # and it keeps logging
        finally:
            stop.set()
            loader.join(30)
        assert gw.call_log.flush()
        wait_for(lambda: not gw.call_log.spool.has_rows())
        final = gw.call_log.stats
        metrics = httpx.get(f"{gw.url}/metrics").text
    assert set(statuses) == {200}, "every call was answered, during the outage too"
    assert final.spooled >= 100 and final.replayed == final.spooled  # everything spooled came back
    assert final.submitted == len(call_ids) == final.inserted + final.duplicate and final.rejected == 0
    assert "slm_gateway_store_up 1" in metrics
    stored = stored_call_ids(private_postgres.url)
    assert len(stored) == len(set(stored)) == len(call_ids)  # calls answered = calls stored, none twice
    assert set(stored) == set(call_ids)
    assert not list(spool.glob("*.jsonl")) and not list((spool / "rejected").glob("*.jsonl"))


# --- c. a Dagster RetryPolicy rides out a log-store restart -------------------------------------------

def test_raw_agent_calls_is_retried_through_a_log_store_restart(private_postgres: TempPostgres, embedded_home: Path,
                                                                tmp_path: Path):
    from slm_pipeline.assets.collect import raw_agent_calls
    from slm_pipeline.core.collect import RAW_TABLE
    from slm_pipeline.core.lake import Lake
    from slm_pipeline.partitions import agent_partitions
    from slm_pipeline.resources import LakeResource, LogStoreResource

    agent = "travel-planner"
    write_demo_traffic(tmp_path / "t.jsonl", calls=600, seed=13)
    with LogStore(private_postgres.url) as store:
        import_files(store, [tmp_path / "t.jsonl"], tmp_path / "q")
    lake_url = str(tmp_path / "lake")
    resources = {"log_store": LogStoreResource(database_url=private_postgres.url), "lake": LakeResource(url=lake_url)}

    private_postgres.stop()  # down when the run starts
    restarter = threading.Timer(3.0, private_postgres.start)  # a transient fault: back a few seconds later
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, [agent])
        restarter.start()
        try:
            result = dg.materialize([raw_agent_calls], partition_key=agent, instance=instance, resources=resources,
                                    raise_on_error=False)
        finally:
            restarter.join()
        steps = [e for e in instance.all_logs(result.run_id) if e.is_dagster_event and e.dagster_event.step_key]
        kinds = [e.dagster_event.event_type for e in steps]
    assert result.success
    retries = [e for e in steps if e.dagster_event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries, kinds
    assert dg.DagsterEventType.STEP_FAILURE not in kinds
    outcomes = [k for k in kinds if k in (dg.DagsterEventType.STEP_UP_FOR_RETRY, dg.DagsterEventType.STEP_SUCCESS)]
    assert outcomes == [dg.DagsterEventType.STEP_UP_FOR_RETRY] * len(retries) + [dg.DagsterEventType.STEP_SUCCESS]
    assert kinds.count(dg.DagsterEventType.STEP_RESTARTED) == len(retries) <= 3
    first_error = retries[0].dagster_event.event_specific_data.error.to_string()
    assert "Connection refused" in first_error, first_error  # the real fault, not a stand-in

    with LogStore(private_postgres.url) as store:  # the partition's final state
        in_store = store.count(agent)
        max_seq = store.watermarks()[agent]
        with store.engine.connect() as connection:
            store_ids = set(connection.execute(sa.text("SELECT call_id FROM agent_calls WHERE agent_id = :a"),
                                               {"a": agent}).scalars())
    lake = Lake(lake_url).read(RAW_TABLE, agent)
    assert lake.height == in_store > 0
    assert lake["call_id"].n_unique() == lake.height
    assert set(lake["call_id"]) == store_ids
    assert Lake(lake_url).watermark(RAW_TABLE, agent) == max_seq == lake["seq"].max()


# --- d. the load benchmark's code at a small scale: reconciliation only --------------------------------

def test_sustained_open_loop_load_reconciles(make_pg_database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gateway_load import run_load

    result = run_load(make_pg_database("load"), rate=200, seconds=5, work=tmp_path)
    assert not result.errors
    assert result.sent == 1000
    assert result.answered == result.gateway_received == result.gateway_logged == result.sent
    assert result.stored == result.distinct_stored == result.sent  # nothing lost, nothing twice
    assert result.ids_match and len(set(result.call_ids)) == result.sent
    assert result.reconciles
