"""S5 input: `task_datasets`, each task cluster's fine-tuning data with fixed splits."""

from typing import Literal

import dagster as dg
from pydantic import Field

from slm_pipeline.assets.cluster import task_clusters
from slm_pipeline.core.lake import cluster_partition
from slm_pipeline.core.markdown import frame_to_markdown
from slm_pipeline.core.task_data import DATASETS_TABLE, DatasetConfig, build_cluster_dataset
from slm_pipeline.partitions import split_task_cluster_key, task_cluster_partitions
from slm_pipeline.resources import LakeResource

NO_SPLIT_LEAKAGE = "no_near_duplicate_leakage"


class DatasetRunConfig(dg.Config):
    """How each cluster's dataset is built (see README, "S4/S5")."""

    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    min_examples: int = 50
    max_examples: int = 2000
    near_duplicate_threshold: float = 0.8
    prompt_form: Literal["compact", "full"] = Field(
        "compact", description="compact: a short task instruction, the tools as signatures, the conversation; "
        "full: the agent's request as sent. Training and the SLM server render requests the same way.")

    def to_core(self) -> DatasetConfig:
        return DatasetConfig(**self.model_dump())


@dg.asset(
    partitions_def=task_cluster_partitions,
    deps=[dg.AssetDep(task_clusters, partition_mapping=dg.AllPartitionMapping())],
    group_name="s5_finetune",
    kinds={"parquet"},
    description=(
        "The cluster's calls as a chat fine-tuning dataset: a short task prompt with the cluster's tools, the "
        "conversation, and the teacher's answer as the target (sequence-level distillation). Deterministic "
        "train/validation/test splits stratified by tool, near-duplicates kept within one split. Below "
        "`min_examples` the cluster stays on the LLM and says why."
    ),
    check_specs=[dg.AssetCheckSpec(NO_SPLIT_LEAKAGE, asset="task_datasets",
                                   description="No near-duplicate group spans two splits.")],
)
def task_datasets(context: dg.AssetExecutionContext, config: DatasetRunConfig, lake: LakeResource
                  ) -> dg.MaterializeResult:
    agent_id, cluster_id = split_task_cluster_key(context.partition_key)
    the_lake = lake.open()
    dataset = build_cluster_dataset(the_lake, agent_id, cluster_id, config.to_core())
    summary = dataset.summary()
    context.log.info(f"{context.partition_key}: {dataset.status} ({dataset.reason})")
    leaking = dataset.leaking_groups()
    preview = dataset.examples.head(5).select("split", "stratum", "completion")
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in summary.items() if isinstance(v, (int, str))},
            "filtered": dg.MetadataValue.json(summary["filtered"]),
            "dagster/row_count": dataset.examples.height,
            "task_prompt": dg.MetadataValue.text(dataset.task_prompt),
            "prompt_form": dataset.prompt_form,
            "preview": dg.MetadataValue.md(frame_to_markdown(preview)),
            "lake_path": dg.MetadataValue.path(
                the_lake.partition_url(DATASETS_TABLE, cluster_partition(agent_id, cluster_id))),
        },
        check_results=[dg.AssetCheckResult(check_name=NO_SPLIT_LEAKAGE, passed=leaking == 0,
                                           metadata={"groups_in_two_splits": leaking})],
    )

