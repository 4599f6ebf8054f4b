"""The S1 asset `raw_agent_calls`, materialised by Dagster on a real (temporary) instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from slm_pipeline.assets.collect import raw_agent_calls
from slm_pipeline.core.collect import RAW_TABLE
from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore
from slm_pipeline.partitions import agent_partitions
from slm_pipeline.resources import LakeResource, LogStoreResource


@pytest.fixture
def instance():
    with dg.instance_for_test() as the_instance:
        yield the_instance


def _materialize(instance, store_url: str, lake_url: str, agent: str) -> dg.ExecuteInProcessResult:
    if agent not in instance.get_dynamic_partitions(agent_partitions.name):
        instance.add_dynamic_partitions(agent_partitions.name, [agent])
    return dg.materialize(
        [raw_agent_calls], partition_key=agent, instance=instance,
        resources={"log_store": LogStoreResource(database_url=store_url), "lake": LakeResource(url=lake_url)},
    )


def test_materialises_incrementally_with_metadata_and_passing_checks(instance, store_url, tmp_path: Path):
    write_demo_traffic(tmp_path / "a.jsonl", 400, seed=21)
    write_demo_traffic(tmp_path / "b.jsonl", 300, seed=22)
    lake_url = str(tmp_path / "lake")
    with LogStore(store_url) as store:
        import_files(store, [tmp_path / "a.jsonl"], tmp_path / "q")
        first_count = store.count("data-analyst")

        result = _materialize(instance, store_url, lake_url, "data-analyst")
        assert result.success
        [materialization] = result.asset_materializations_for_node("raw_agent_calls")
        meta = {k: v.value for k, v in materialization.metadata.items()}
        assert meta["dagster/row_count"] == meta["new_rows"] == first_count
        assert meta["first_call"] < meta["last_call"]
        assert meta["teacher_models"] == {"meta/llama-3.3-70b-instruct": first_count}
        assert "| seq | call_id |" in meta["preview"]
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == {"unique_call_ids", "reconciles_with_log_store"}
        assert all(c.passed for c in checks)

        import_files(store, [tmp_path / "b.jsonl"], tmp_path / "q")
        again = _materialize(instance, store_url, lake_url, "data-analyst")
        [second] = again.asset_materializations_for_node("raw_agent_calls")
        assert second.metadata["new_rows"].value == store.count("data-analyst") - first_count
        assert second.metadata["dagster/row_count"].value == store.count("data-analyst")
        assert Lake(lake_url).read(RAW_TABLE, "data-analyst").height == store.count("data-analyst")


def test_metadata_carries_no_prompt_text(instance, store_url, tmp_path: Path):
    write_demo_traffic(tmp_path / "a.jsonl", 200, seed=4)
    with LogStore(store_url) as store:
        import_files(store, [tmp_path / "a.jsonl"], tmp_path / "q")
    result = _materialize(instance, store_url, str(tmp_path / "lake"), "support-bot")
    text = str([(k, v.value) for m in result.asset_materializations_for_node("raw_agent_calls")
                for k, v in m.metadata.items()])
    assert "@" not in text and "ORD-" not in text  # no e-mail addresses, no order ids from prompts


def test_failed_check_when_the_lake_holds_a_duplicate(instance, store_url, tmp_path: Path):
    write_demo_traffic(tmp_path / "a.jsonl", 200, seed=9)
    lake_url = str(tmp_path / "lake")
    with LogStore(store_url) as store:
        import_files(store, [tmp_path / "a.jsonl"], tmp_path / "q")
    _materialize(instance, store_url, lake_url, "travel-planner")
    lake = Lake(lake_url)
    [path] = lake.files(RAW_TABLE, "travel-planner")
    frame = lake.read(RAW_TABLE, "travel-planner")
    lake.append(RAW_TABLE, "travel-planner", frame.head(1), 0, 0)  # a stray copy of a call
    result = _materialize(instance, store_url, lake_url, "travel-planner")
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert failed == {"unique_call_ids", "reconciles_with_log_store"}
