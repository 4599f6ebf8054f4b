"""Task clustering on the session's curated demo traffic, against its true task types."""

from __future__ import annotations

import time

import orjson
import pytest
from sklearn.metrics import adjusted_rand_score

from slm_pipeline.core.cluster.assign import OnlineAssigner
from slm_pipeline.core.cluster.pipeline import ClusteringConfig, cluster_agent, cluster_calls, load_assigner, \
    previous_clustering
from slm_pipeline.core.curate.pipeline import CURATED_TABLE

AGENTS = ["support-bot", "travel-planner", "data-analyst"]


@pytest.mark.parametrize("agent", AGENTS)
def test_clusters_match_the_true_task_types(curated_demo, embedder, agent):
    lake, truth = curated_demo
    calls = lake.read(CURATED_TABLE, agent)
    result = cluster_calls(calls, agent, embedder)
    labels = [truth[c] for c in result.assignments["call_id"]]
    predicted = [c or "none" for c in result.assignments["cluster_id"]]
    assert adjusted_rand_score(labels, predicted) >= 0.9
    assert result.metrics["clusters"] <= 2 * len(set(labels))
    assert result.assignments.height == calls.height
    clusters = result.clusters
    assert set(clusters["cluster_id"]) == set(result.assignments["cluster_id"].drop_nulls())
    row = clusters.row(0, named=True)
    assert row["keywords"] and row["examples"] and row["prompt_tokens_p95"] >= row["prompt_tokens_p50"] > 0
    assert result.map_png.startswith(b"\x89PNG")
    assert 0 <= result.metrics["noise_fraction"] < 0.1 and result.metrics["relative_validity"] is not None


def test_ids_stay_stable_across_runs_and_the_assigner_round_trips(curated_demo, embedder):
    lake, _ = curated_demo
    agent = "travel-planner"
    first = cluster_agent(lake, agent, embedder)
    assert {e["event"] for e in first.events} == {"birth"}
    members, known = previous_clustering(lake, agent)
    again = cluster_agent(lake, agent, embedder)
    assert {e["event"] for e in again.events} == {"continued"}
    # the same input clusters the same way, membership scores included (UMAP's spectral init moved them run to
    # run on this data; the reducer now starts from PCA)
    assert again.assignments.equals(first.assignments)
    assert again.assignments["membership"].is_between(0, 1).all()
    assert lake.read("task_cluster_events", agent).height == len(first.events) + len(again.events)

    assigner = load_assigner(lake, agent)
    assert isinstance(assigner, OnlineAssigner) and assigner.cluster_ids == sorted(first.clusters["cluster_id"])
    rows = lake.read(CURATED_TABLE, agent).head(200)
    requests = [orjson.loads(r) for r in rows["request"]]
    started = time.perf_counter()
    online = assigner.assign(requests[:1], embedder)  # one call, as the gateway sends them
    single = time.perf_counter() - started
    online = assigner.assign(requests, embedder, rows["replacements"].to_list())
    expected = dict(zip(first.assignments["call_id"], first.assignments["cluster_id"]))
    agree = [o.cluster_id == expected[c] for o, c in zip(online, rows["call_id"]) if expected[c] is not None]
    assert sum(agree) / len(agree) >= 0.9
    assert single < 5  # loose: the benchmark measures the real figure


def test_other_stages_run(curated_demo, embedder):
    lake, truth = curated_demo
    calls = lake.read(CURATED_TABLE, "support-bot")
    for config in (ClusteringConfig(reducer="pca"), ClusteringConfig(clusterer="kmeans", kmeans_k=4)):
        result = cluster_calls(calls, "support-bot", embedder, config)
        labels = [truth[c] for c in result.assignments["call_id"]]
        assert adjusted_rand_score(labels, [c or "none" for c in result.assignments["cluster_id"]]) >= 0.8


def test_too_little_data_is_a_status_not_a_crash(curated_demo, embedder):
    lake, _ = curated_demo
    few = lake.read(CURATED_TABLE, "data-analyst").head(20)
    result = cluster_calls(few, "data-analyst", embedder, ClusteringConfig(min_calls=50))
    assert result.status == "insufficient_data" and "min_calls=50" in result.message
    assert result.assignments.height == 20 and result.assignments["cluster_id"].null_count() == 20
    assert result.clusters.height == 0 and result.assigner is None
    empty = cluster_calls(few.head(0), "data-analyst", embedder)
    assert empty.status == "no_curated_calls" and empty.assignments.height == 0


def test_a_missing_embedding_model_says_what_to_do():
    from slm_pipeline.core.cluster.stages import ModelUnavailable, SentenceTransformerEmbedder

    with pytest.raises(ModelUnavailable, match="not available offline"):
        SentenceTransformerEmbedder("no-such-org/no-such-model").encode(["x"])


def test_a_multi_tool_assistant_clusters_by_tool_suite_into_trainable_clusters(curated_assistant, embedder):
    from slm_pipeline.core.demo.assistant import AGENT_ID, suite_of

    lake, truth = curated_assistant
    calls = lake.read(CURATED_TABLE, AGENT_ID)
    result = cluster_calls(calls, AGENT_ID, embedder)
    suites = [suite_of(truth[c]) for c in result.assignments["call_id"]]
    predicted = [c or "none" for c in result.assignments["cluster_id"]]
    assert adjusted_rand_score(suites, predicted) >= 0.85
    assert result.metrics["trainable_share"] >= 0.8 and result.metrics["dataset_minimum"] == 50
    assert result.metrics["clusters"] == result.clusters.height and result.metrics["cluster_size_max"] >= 100
    for cluster_id in result.clusters["cluster_id"]:  # every cluster >= 0.9 pure by suite
        inside = [s for s, c in zip(suites, predicted) if c == cluster_id]
        assert max(inside.count(s) for s in set(inside)) / len(inside) >= 0.9
    # the functions stay visible as strata, on every call and per cluster
    biggest = result.clusters.row(0, named=True)
    assert biggest["trainable"] and len(biggest["strata"]) >= 4
    assert sum(s["calls"] for s in biggest["strata"]) == biggest["size"]
    assert result.assignments["stratum"].null_count() == 0
    # function-level clustering, for comparison, leaves most calls in clusters too small to train
    fine = cluster_calls(calls, AGENT_ID, embedder, ClusteringConfig(granularity="function"))
    assert fine.metrics["trainable_share"] < result.metrics["trainable_share"]


def test_a_recluster_after_the_granularity_change_keeps_lineage_and_retires_champions(
        curated_assistant, embedder, embedded_home, tmp_path):
    import mlflow

    from slm_pipeline.core.demo.assistant import AGENT_ID
    from slm_pipeline.core.finetune import registered_model_name
    from slm_pipeline.core.lake import Lake
    from slm_pipeline.core.refine import registry
    from slm_pipeline.core.refine.routing import build_routing_table, retire_stale_champions
    from slm_pipeline.core.settings import Settings

    source, _ = curated_assistant
    lake = Lake(str(tmp_path / "lake"))
    lake.write(CURATED_TABLE, AGENT_ID, source.read(CURATED_TABLE, AGENT_ID))
    before = cluster_agent(lake, AGENT_ID, embedder, ClusteringConfig(granularity="function"))
    after = cluster_agent(lake, AGENT_ID, embedder)
    old, new = set(before.clusters["cluster_id"]), set(after.clusters["cluster_id"])
    assert len(new) < len(old)
    merged = [e for e in after.events if e["event"] == "merge"]
    assert merged and all(e["related"] in old and e["cluster_id"] in new for e in merged)
    gone = old - new  # every old cluster either lives on, or is merged into (or retired by) a new one
    accounted = {e["related"] for e in merged} | {e["cluster_id"] for e in after.events if e["event"] == "retired"}
    assert gone <= accounted
    history = lake.read("task_cluster_events", AGENT_ID)
    assert history.height == len(before.events) + len(after.events) and history["run"].n_unique() == 2
    assert set(lake.read("task_clusters", AGENT_ID)["cluster_id"]) == new  # retired ids are no partition now

    # champions of two merged-away clusters and of one that lives on (as S6 would have promoted them)
    client = mlflow.MlflowClient(Settings().resolved_mlflow_uri)
    merged_away = sorted(gone)[:2]
    kept = sorted(new & old)[:1]
    for cluster_id in merged_away + kept:
        name = registered_model_name(AGENT_ID, cluster_id)
        client.create_registered_model(name)
        for _ in range(2):
            client.create_model_version(name, str(tmp_path), tags={"base_model": "smollm2-135m-instruct"})
        registry.promote(name, "1", "first")
        registry.promote(name, "2", "better")
    retired = retire_stale_champions(lake, Settings(), [AGENT_ID])
    assert sorted(r["cluster_id"] for r in retired) == merged_away and all(r["version"] == "2" for r in retired)
    for entry in retired:
        name = registered_model_name(AGENT_ID, entry["cluster_id"])
        assert registry.get_alias(name) is None and registry.get_alias(name, registry.PREVIOUS) is None
        heir = next(e["cluster_id"] for e in merged if e["related"] == entry["cluster_id"])
        assert client.get_registered_model(name).tags["retired"].startswith(f"merged into {heir}")
        assert entry["reason"].startswith(f"merged into {heir}")
    for cluster_id in kept:  # a cluster that lives on keeps its champion
        assert registry.get_alias(registered_model_name(AGENT_ID, cluster_id)).version == "2"
    assert retire_stale_champions(lake, Settings(), [AGENT_ID]) == []  # once only
    routes = build_routing_table(lake, Settings(), [AGENT_ID]).routes
    assert {r.cluster_id for r in routes} == new  # no route points at a retired cluster


def test_one_task_or_too_few_calls_gives_one_cluster_or_none_with_a_status(curated_demo, embedder):
    lake, truth = curated_demo
    calls = lake.read(CURATED_TABLE, "support-bot")
    one_task = calls.filter(calls["call_id"].is_in([c for c, t in truth.items() if t == "support.order_status"]))
    result = cluster_calls(one_task, "support-bot", embedder)
    assert result.status == "ok" and result.metrics["clusters"] == 1 and result.metrics["trainable_share"] > 0.9
    few = cluster_calls(one_task.head(30), "support-bot", embedder)
    assert few.status == "insufficient_data" and few.metrics["trainable_share"] == 0
    none = cluster_calls(one_task.head(0), "support-bot", embedder)
    assert none.status == "no_curated_calls" and "curated_calls" in none.message


def test_zero_curated_calls_name_the_missing_upstream_step(tmp_path):
    import polars as pl

    from slm_pipeline.core.cluster.pipeline import missing_upstream_step
    from slm_pipeline.core.collect import RAW_TABLE
    from slm_pipeline.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    assert missing_upstream_step(lake, "a", 0) is None  # no traffic at all: nothing is missing
    assert "'*task_clusters'" in missing_upstream_step(lake, "a", 120)  # S1 never ran
    lake.write(RAW_TABLE, "a", pl.DataFrame({"call_id": ["x", "y"]}))
    assert "curated_calls" in missing_upstream_step(lake, "a", 2)  # S2 never ran
    lake.write(CURATED_TABLE, "a", pl.DataFrame({"call_id": []}, schema={"call_id": pl.String}))
    assert "kept none" in missing_upstream_step(lake, "a", 2)
