from __future__ import annotations

from pathlib import Path

import orjson

from slm_pipeline.core.collect import RAW_SCHEMA, RAW_TABLE, collect_new_calls, summarise_raw_calls
from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore


def test_collect_is_incremental_exact_and_reconciles(store: LogStore, tmp_path: Path):
    write_demo_traffic(tmp_path / "first.jsonl", calls=300, seed=1)
    write_demo_traffic(tmp_path / "second.jsonl", calls=200, seed=2)
    lake = Lake(str(tmp_path / "lake"))
    import_files(store, [tmp_path / "first.jsonl"], tmp_path / "q")
    agent = "support-bot"

    first = collect_new_calls(store, lake, agent, batch_size=40)
    assert first.new_rows == store.count(agent) and len(first.files) > 1
    assert collect_new_calls(store, lake, agent).new_rows == 0  # nothing new: nothing written

    import_files(store, [tmp_path / "second.jsonl"], tmp_path / "q")
    second = collect_new_calls(store, lake, agent)
    assert second.watermark_before == first.watermark_after
    assert first.new_rows + second.new_rows == store.count(agent)

    frame = lake.read(RAW_TABLE, agent)
    assert frame.schema == RAW_SCHEMA
    assert frame["call_id"].n_unique() == frame.height == store.count(agent)
    stored = {row["call_id"]: row for batch in store.iter_calls(agent) for row in batch}
    for row in frame.head(50).iter_rows(named=True):
        assert orjson.loads(row["request"]) == orjson.loads(stored[row["call_id"]]["request_payload"])
        assert orjson.loads(row["response"]) == orjson.loads(stored[row["call_id"]]["response_payload"])


def test_summary_counts_and_a_preview_without_payloads(store: LogStore, tmp_path: Path):
    write_demo_traffic(tmp_path / "t.jsonl", calls=400, seed=3)
    import_files(store, [tmp_path / "t.jsonl"], tmp_path / "q")
    lake = Lake(str(tmp_path / "lake"))
    collect_new_calls(store, lake, "travel-planner")
    summary = summarise_raw_calls(lake, "travel-planner", preview_rows=5)
    assert summary.rows == store.count("travel-planner")
    assert summary.failed > 0 and summary.human_facing > 0 and summary.duplicate_call_ids == 0
    assert summary.first_call < summary.last_call
    assert summary.models == {"gpt-4o-2024-08-06": summary.rows}
    assert summary.preview.height == 5
    assert not {"request", "response", "tags"} & set(summary.preview.columns)


def test_an_agent_without_calls_summarises_empty(tmp_path: Path):
    summary = summarise_raw_calls(Lake(str(tmp_path)), "nobody")
    assert summary.rows == 0 and summary.first_call is None
