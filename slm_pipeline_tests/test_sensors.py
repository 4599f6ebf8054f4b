from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.store import LogStore
from slm_pipeline.partitions import agent_partitions
from slm_pipeline.resources import LogStoreResource
from slm_pipeline.sensors import new_agent_calls


def evaluate(instance, store_url: str, cursor: str | None = None) -> dg.SensorResult:
    resources = {"log_store": LogStoreResource(database_url=store_url)}
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return new_agent_calls(context)


def test_new_agents_get_a_partition_and_an_ingest_then_only_growth_triggers(store_url, tmp_path: Path):
    write_demo_traffic(tmp_path / "a.jsonl", 300, seed=1)
    with dg.instance_for_test() as instance, LogStore(store_url) as store:
        assert evaluate(instance, store_url).run_requests == []  # an empty store: nothing to do

        import_files(store, [tmp_path / "a.jsonl"], tmp_path / "q")
        result = evaluate(instance, store_url)
        [add] = result.dynamic_partitions_requests
        assert add.partitions_def_name == agent_partitions.name
        assert sorted(add.partition_keys) == ["data-analyst", "support-bot", "travel-planner"]
        assert sorted(r.partition_key for r in result.run_requests) == sorted(add.partition_keys)
        assert json.loads(result.cursor) == store.watermarks()

        instance.add_dynamic_partitions(agent_partitions.name, add.partition_keys)
        quiet = evaluate(instance, store_url, result.cursor)
        assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []

        write_demo_traffic(tmp_path / "b.jsonl", 20, seed=2)
        import_files(store, [tmp_path / "b.jsonl"], tmp_path / "q")
        grown = evaluate(instance, store_url, result.cursor)
        assert grown.dynamic_partitions_requests == []
        assert {r.partition_key for r in grown.run_requests} <= {"data-analyst", "support-bot", "travel-planner"}
        assert grown.run_requests and all("@" in r.run_key for r in grown.run_requests)


def test_the_retraining_sensor_starts_stopped_when_embedded_and_says_how_to_turn_it_on(embedded_home: Path):
    from slm_pipeline.core.settings import Settings
    from slm_pipeline.sensors import retrain_clusters, retraining_status

    stopped, running = dg.DefaultSensorStatus.STOPPED, dg.DefaultSensorStatus.RUNNING
    assert retraining_status(Settings()) == stopped  # embedded, retraining: auto
    assert retraining_status(Settings(database_url="postgresql://db/x")) == running  # a deployment
    assert retraining_status(Settings(retraining="on")) == running
    assert retraining_status(Settings(database_url="postgresql://db/x", retraining="off")) == stopped
    assert "SLM_PIPELINE_RETRAINING=on" in retrain_clusters.description
