"""`curated_calls` materialised by Dagster after `raw_agent_calls`, on a real temporary instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from slm_pipeline.assets.collect import raw_agent_calls
from slm_pipeline.assets.curate import curated_calls
from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.store import LogStore
from slm_pipeline.partitions import agent_partitions
from slm_pipeline.resources import LakeResource, LogStoreResource


@pytest.fixture
def setup(embedded_home: Path, tmp_path: Path):
    write_demo_traffic(tmp_path / "t.jsonl", 400, seed=31)
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with LogStore(store_url) as store:
        import_files(store, [tmp_path / "t.jsonl"], tmp_path / "q")
    resources = {"log_store": LogStoreResource(database_url=store_url), "lake": LakeResource(url=str(tmp_path / "lake"))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, ["support-bot"])
        yield instance, resources


def _run(instance, resources, config: dict | None = None) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"curated_calls": {"config": config}}} if config else None
    return dg.materialize([raw_agent_calls, curated_calls], partition_key="support-bot", instance=instance,
                          resources=resources, run_config=run_config, raise_on_error=False)


def test_curated_calls_metadata_and_checks(setup, embedded_home: Path):
    instance, resources = setup
    result = _run(instance, resources, {"workers": 1})
    assert result.success
    [materialization] = result.asset_materializations_for_node("curated_calls")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    dropped = meta["dropped_by_reason"]
    assert meta["raw_calls"] == meta["dagster/row_count"] + sum(dropped.values())
    assert {"human_facing", "exact_duplicate"} <= set(dropped)
    assert meta["pii_entities_replaced"]["EMAIL_ADDRESS"] > 0
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["no_structured_identifiers"].passed and checks["counts_reconcile"].passed
    assert (embedded_home / "secrets" / "surrogate_salt").stat().st_mode & 0o077 == 0
    assert list((embedded_home / "cache").glob("pii-findings-*.sqlite"))

    again = _run(instance, resources, {"workers": 1})
    [second] = again.asset_materializations_for_node("curated_calls")
    assert second.metadata["texts_from_cache"].value == second.metadata["texts_distinct"].value


def test_the_leak_check_fails_loudly_and_blocks_when_identifiers_survive(setup):
    instance, resources = setup
    kept = ["PERSON", "PHONE_NUMBER"]  # e-mail addresses, cards, IBANs and keys are left in
    result = _run(instance, resources, {"workers": 1, "entities": kept})
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_structured_identifiers"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["identifiers_found"].value["EMAIL_ADDRESS"] > 0
