"""When S4-S6 run again: the retraining policy, the nightly schedule and the sensors that apply it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE
from slm_pipeline.core.collect import RAW_TABLE
from slm_pipeline.core.curate.pipeline import CURATED_TABLE
from slm_pipeline.core.finetune import FINETUNED_TABLE
from slm_pipeline.core.lake import Lake, cluster_partition
from slm_pipeline.core.refine.evaluation import EVALUATIONS_TABLE
from slm_pipeline.core.refine.retraining import (
    LiveStats,
    RetrainPolicy,
    calls_since_curation,
    live_stats,
    refresh_reason,
    retraining_decisions,
    unassigned_share,
)
from slm_pipeline.core.store import LogStore
from slm_pipeline.definitions import defs
from slm_pipeline.partitions import agent_partitions, task_cluster_partitions
from slm_pipeline.resources import LakeResource, LogStoreResource
from slm_pipeline.schedules import nightly_refresh
from slm_pipeline.sensors import retrain_clusters, traffic_volume
from slm_pipeline_tests.test_store import call


def _lake(tmp_path: Path) -> Lake:
    """Agent a1 with four clusters: never trained, grown, steady, and steady but falling back live."""
    lake = Lake(str(tmp_path / "lake"))
    lake.write(CLUSTERS_TABLE, "a1", pl.DataFrame({"cluster_id": ["c001", "c002", "c003", "c004"],
                                                   "size": [300, 700, 320, 310]}))
    for cluster, trained_on in (("c002", 400), ("c003", 300), ("c004", 300)):
        lake.put_file(FINETUNED_TABLE, cluster_partition("a1", cluster), "models.json",
                      json.dumps({"trained_on_calls": trained_on, "models": []}).encode())
        lake.put_file(EVALUATIONS_TABLE, cluster_partition("a1", cluster), "evaluation.json", json.dumps(
            {"best": {"metrics": {"schema_valid_rate": 0.98, "agreement": 0.97}}, "champion": None}).encode())
    tags = [{"route": "slm", "cluster_id": "c004"}] * 40 + [{"route": "fallback", "cluster_id": "c004"}] * 20 \
        + [{"route": "slm", "cluster_id": "c003"}] * 60 + [{"route": "llm"}] * 5
    lake.write(RAW_TABLE, "a1", pl.DataFrame({"tags": [json.dumps(t) for t in tags] + ["not json", None]}))
    return lake


def test_each_cluster_gets_a_decision_and_a_reason(tmp_path: Path):
    decisions = {d.cluster_id: d for d in retraining_decisions(_lake(tmp_path), "a1")}
    assert decisions["c001"].due and decisions["c001"].reason == "first training (300 calls)"
    assert decisions["c002"].due and decisions["c002"].reason == "new data: 300 calls since training on 400"
    assert not decisions["c003"].due and "live quality holds" in decisions["c003"].reason
    assert decisions["c004"].due
    assert decisions["c004"].reason == "fallbacks rose: 33.3% of 60 routed calls, 2.0% at evaluation"


def test_thresholds_are_the_policy(tmp_path: Path):
    lake = _lake(tmp_path)
    strict = {d.cluster_id: d.due for d in retraining_decisions(lake, "a1", RetrainPolicy(min_new_calls=301))}
    assert strict["c002"] is False  # 300 new calls are not enough under this policy
    quiet = {d.cluster_id: d.due for d in retraining_decisions(lake, "a1", RetrainPolicy(min_live_calls=61))}
    assert quiet["c004"] is False  # 60 routed calls are too few to judge


def test_live_stats_count_routes_and_shadow_disagreements(tmp_path: Path):
    stats = live_stats(_lake(tmp_path), "a1")
    assert stats["c004"] == LiveStats(routed=60, fallbacks=20)
    assert stats["c004"].fallback_rate == pytest.approx(1 / 3)
    assert set(stats) == {"c003", "c004"}  # calls the LLM answered directly are not a cluster's
    shadow = {"cluster_id": "c003", "route": "shadow"}
    lake = Lake(str(tmp_path / "lake2"))
    lake.write(RAW_TABLE, "a1", pl.DataFrame({"tags": [json.dumps({**shadow, "shadow_agrees": i % 4 != 0})
                                                       for i in range(8)]}))
    assert live_stats(lake, "a1")["c003"].disagreement_rate == 0.25


def test_the_nightly_schedule_refreshes_every_agent_at_two():
    assert nightly_refresh.cron_schedule == "0 2 * * *" and nightly_refresh.execution_timezone == "UTC"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, ["a1", "a2"])
        context = dg.build_schedule_context(instance=instance,
                                            scheduled_execution_time=datetime(2026, 12, 1, 2, tzinfo=timezone.utc))
        requests = nightly_refresh(context)
    assert [(r.partition_key, r.run_key) for r in requests] == [("a1", "nightly-2026-12-01-a1"),
                                                                ("a2", "nightly-2026-12-01-a2")]
    assert {defs.resolve_job_def(n).name for n in ("refresh_job", "retrain_job", "publish_job")} == {"refresh_job", "retrain_job", "publish_job"}


def test_retrain_sensor_adds_partitions_and_retrains_what_is_due_once(tmp_path: Path):
    _lake(tmp_path)
    resources = {"lake": LakeResource(url=str(tmp_path / "lake"))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, ["a1"])
        instance.report_runless_asset_event(dg.AssetMaterialization("task_clusters", partition="a1"))
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = retrain_clusters(context)
        [add] = result.dynamic_partitions_requests
        assert add.partitions_def_name == task_cluster_partitions.name
        assert sorted(add.partition_keys) == ["a1:c001", "a1:c002", "a1:c003", "a1:c004"]
        assert sorted(r.partition_key for r in result.run_requests) == ["a1:c001", "a1:c002", "a1:c004"]
        assert all(r.tags["slm_pipeline/trigger"] for r in result.run_requests)
        # The same clustering is not acted on twice.
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor) as context:
            again = retrain_clusters(context)
        assert again.run_requests == [] and again.cursor == result.cursor


def test_volume_sensor_refreshes_an_agent_with_enough_unseen_calls(store_url: str, tmp_path: Path):
    lake = Lake(str(tmp_path / "lake"))
    with LogStore(store_url) as store:
        store.insert([call(f"c{i}") for i in range(30)])
        seqs = sorted(row["seq"] for batch in store.iter_calls("a1") for row in batch)
        lake.write(CURATED_TABLE, "a1", pl.DataFrame({"seq": seqs[:10]}))
        assert calls_since_curation(lake, store, "a1") == 20
    resources = {"lake": LakeResource(url=str(tmp_path / "lake")), "log_store": LogStoreResource(database_url=store_url)}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, ["a1"])
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            assert traffic_volume(context).run_requests == []  # 20 < RetrainPolicy.refresh_calls
        with LogStore(store_url) as store:
            store.insert([call(f"d{i}") for i in range(RetrainPolicy.refresh_calls)])
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            [request] = traffic_volume(context).run_requests
    assert request.partition_key == "a1" and request.run_key == f"refresh-a1-after-{seqs[9]}"
    assert request.tags["slm_pipeline/trigger"] == f"volume: {20 + RetrainPolicy.refresh_calls} new calls"


def test_drift_is_the_share_of_recent_routed_calls_no_cluster_fits(store_url: str, tmp_path: Path):
    lake = Lake(str(tmp_path / "lake"))
    reasons = (["no confident task cluster (confidence 0.31, needs 0.6)"] * 40 + ["champion slm-a1-c001 v1"] * 60
               + ["human-facing calls stay on the LLM"] * 30)
    lake.write(RAW_TABLE, "a1", pl.DataFrame({"seq": list(range(len(reasons) + 1)), "tags": [
        json.dumps({"route": "llm", "route_reason": r}) for r in reasons] + [None]}))
    assert unassigned_share(lake, "a1") == (0.4, 100)
    assert unassigned_share(lake, "a1", recent=50)[1] == 50
    with LogStore(store_url) as store:  # no calls waiting: only the drift can call for a refresh
        assert refresh_reason(lake, store, "a1") == "drift: 40% of 100 recent calls fit no task cluster"
        assert refresh_reason(lake, store, "a1", RetrainPolicy(drift_unassigned=0.5)) is None
        assert refresh_reason(lake, store, "a1", RetrainPolicy(drift_min_calls=101)) is None


def test_live_rates_count_only_the_newest_routing_table_of_each_cluster(tmp_path: Path):
    lake = Lake(str(tmp_path / "lake"))
    old = [{"route": "fallback", "cluster_id": "c001", "routing_table_version": 1}] * 30
    new = [{"route": "slm", "cluster_id": "c001", "routing_table_version": 2}] * 9 + [
        {"route": "fallback", "cluster_id": "c001", "routing_table_version": 2}]
    lake.write(RAW_TABLE, "a1", pl.DataFrame({"tags": [json.dumps(t) for t in old + new]}))
    assert live_stats(lake, "a1")["c001"] == LiveStats(routed=10, fallbacks=1)  # the old champion's don't count
