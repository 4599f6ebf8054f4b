"""S3 cluster: `task_clusters`, the agent's recurring task types, each a `task_cluster` partition."""

from typing import Literal, Optional

import dagster as dg

from slm_pipeline.assets.curate import curated_calls
from slm_pipeline.core.cluster.features import FeatureWeights
from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE, ClusteringConfig, cluster_agent, missing_upstream_step
from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder
from slm_pipeline.core.markdown import frame_to_markdown, png_markdown
from slm_pipeline.core.tracking import log_run
from slm_pipeline.partitions import agent_partitions, task_cluster_key, task_cluster_partitions
from slm_pipeline.resources import LakeResource, LogStoreResource

ASSIGNMENTS_RECONCILE = "every_curated_call_assigned"
ONLINE_ASSIGNER_AGREES = "online_assigner_agrees"


class ClusteringRunConfig(dg.Config):
    """S3 settings; the defaults are the documented ones (see README, "S3 cluster")."""

    weight_user_turn: float = 1.0
    weight_system_prompt: float = 1.5
    weight_tools_offered: float = 0.5
    weight_tools_called: float = 3.0
    weight_answer_shape: float = 1.5
    embedding_model: Optional[str] = None
    reducer: Literal["umap", "pca"] = "umap"
    n_components: int = 5
    n_neighbors: int = 30
    clusterer: Literal["hdbscan", "kmeans"] = "hdbscan"
    min_cluster_size: int = 10
    kmeans_k: int = 12
    merge_similarity: float = 0.9
    reassign_threshold: float = 0.5
    min_calls: int = 50
    fit_sample: int = 12_000
    assignment_confidence: float = 0.6
    seed: int = 42
    granularity: Literal["trainable", "function"] = "trainable"
    trainable_min: int = ClusteringConfig().trainable_min
    purity: float = 0.9
    log_to_mlflow: bool = True

    def to_core(self) -> ClusteringConfig:
        weights = FeatureWeights(self.weight_user_turn, self.weight_system_prompt, self.weight_tools_offered,
                                 self.weight_tools_called, self.weight_answer_shape)
        fields = self.model_dump(exclude={"log_to_mlflow"})
        return ClusteringConfig(weights=weights, **{k: v for k, v in fields.items() if not k.startswith("weight_")})


@dg.asset(
    partitions_def=agent_partitions,
    deps=[curated_calls],
    group_name="s3_cluster",
    kinds={"umap", "hdbscan", "parquet"},
    description=(
        "The agent's recurring task types, found without labels from what each call asked and what the agent "
        "did (latest user turn, system prompt, tools offered and called, answer shape). Cluster ids stay stable "
        "between runs; each cluster becomes a `task_cluster` partition; an online assigner lets the gateway "
        "route new calls."
    ),
    check_specs=[
        dg.AssetCheckSpec(ASSIGNMENTS_RECONCILE, asset="task_clusters",
                          description="Every curated call has exactly one assignment (a cluster, or none)."),
        dg.AssetCheckSpec(ONLINE_ASSIGNER_AGREES, asset="task_clusters",
                          description="The request-only online assigner agrees with the clustering on >= 90% "
                          "of clustered calls (it routes calls before the LLM answers)."),
    ],
)
def task_clusters(context: dg.AssetExecutionContext, config: ClusteringRunConfig, lake: LakeResource,
                  log_store: LogStoreResource) -> dg.MaterializeResult:
    agent_id = context.partition_key
    core = config.to_core()
    the_lake = lake.open()
    missing = missing_upstream_step(the_lake, agent_id, log_store.open().count(agent_id))
    if missing:  # zero curated calls while the agent's calls exist: a step upstream has not run (or kept none)
        raise dg.Failure(description=missing, metadata={"agent_id": agent_id})
    embedder = SentenceTransformerEmbedder(core.embedding_model)
    reported = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - reported[0] >= max(total // 5, 1):
            reported[0] = done
            context.log.info(f"embedded {done:,} of {total:,} distinct user turns")

    result = cluster_agent(the_lake, agent_id, embedder, core, progress, run_name=context.run.run_id)
    context.log.info(f"{agent_id}: {result.message}")
    keys = [task_cluster_key(agent_id, c) for c in result.clusters["cluster_id"].to_list()]
    new_keys = [k for k in keys if not context.instance.has_dynamic_partition(task_cluster_partitions.name, k)]
    if new_keys:
        context.instance.add_dynamic_partitions(task_cluster_partitions.name, new_keys)

    table = result.clusters.select("cluster_id", "label", "size", "trainable", "keywords", "tools_called",
                                   "prompt_tokens_p95", "answer_tokens_p95")
    metadata = {
        "status": result.status,
        "message": result.message,
        "dagster/row_count": result.assignments.height,
        "clusters": result.metrics["clusters"],
        "trainable_share": dg.MetadataValue.float(float(result.metrics["trainable_share"])),
        "trainable_clusters": result.metrics["trainable_clusters"],
        "dataset_minimum": result.metrics["dataset_minimum"],
        "cluster_sizes": dg.MetadataValue.json(sorted(result.clusters["size"].to_list(), reverse=True)),
        "noise_fraction": result.metrics["noise_fraction"],
        "relative_validity": result.metrics["relative_validity"],
        "task_cluster_partitions": dg.MetadataValue.json(keys),
        "cluster_table": dg.MetadataValue.md(frame_to_markdown(table.with_columns(
            table["keywords"].list.join(", "), table["tools_called"].list.join(", ")))),
        "events": dg.MetadataValue.json(result.events),
        "seconds_by_stage": dg.MetadataValue.json(result.stages),
        "lake_path": dg.MetadataValue.path(the_lake.partition_url(CLUSTERS_TABLE, agent_id)),
    }
    if result.map_png:
        metadata["cluster_map"] = dg.MetadataValue.md(png_markdown(result.map_png, f"task clusters of {agent_id}"))
    if config.log_to_mlflow and result.status == "ok":
        run_id = log_run(
            "slm_pipeline/task_clusters", f"{agent_id} {context.run.run_id[:8]}",
            params={**config.model_dump(exclude={"log_to_mlflow"}), "agent_id": agent_id},
            metrics={k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
            tags={"agent_id": agent_id, "dagster_run_id": context.run.run_id},
            artifacts={"cluster_map.png": result.map_png or b"", "clusters.csv": result.clusters.drop("strata").with_columns(
                result.clusters["keywords"].list.join(" "), result.clusters["examples"].list.join(" | "),
                result.clusters["tools_called"].list.join(" "), result.clusters["answer_kinds"].list.join(" "),
            ).write_csv().encode()},
        )
        metadata["mlflow_run_id"] = run_id
    agreement = result.metrics.get("online_assignment_agreement")
    return dg.MaterializeResult(metadata=metadata, check_results=[
        dg.AssetCheckResult(check_name=ASSIGNMENTS_RECONCILE,
                            passed=result.assignments["call_id"].n_unique() == result.assignments.height,
                            metadata={"assignments": result.assignments.height}),
        dg.AssetCheckResult(check_name=ONLINE_ASSIGNER_AGREES, passed=agreement is None or agreement >= 0.9,
                            severity=dg.AssetCheckSeverity.WARN,
                            metadata={"agreement": agreement if agreement is not None else "no clusters"}),
    ])
