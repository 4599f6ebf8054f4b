"""S4 select: `slm_candidates`, the catalogue SLMs worth fine-tuning for each task cluster."""

from typing import Literal, Optional

import dagster as dg
import polars as pl

from slm_pipeline.assets.datasets import task_datasets
from slm_pipeline.core.lake import cluster_partition
from slm_pipeline.core.markdown import frame_to_markdown
from slm_pipeline.core.models.catalogue import load_catalogue
from slm_pipeline.core.select import Candidate, SelectionConfig, candidates_frame, select_candidates
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import load_cluster_dataset
from slm_pipeline.core.tracking import log_run
from slm_pipeline.partitions import split_task_cluster_key, task_cluster_partitions
from slm_pipeline.resources import LakeResource

CANDIDATES_TABLE = "slm_candidates"
EXPERIMENT = "slm_pipeline/slm_candidates"


class SelectionRunConfig(dg.Config):
    """S4 constraints (see README, "S4 select")."""

    licences: list[str] = list(SelectionConfig.licences)
    max_params_b: Optional[float] = SelectionConfig.max_params_b
    max_memory_gb: Optional[float] = SelectionConfig.max_memory_gb
    memory_precision: Literal["bf16", "4bit"] = SelectionConfig.memory_precision
    require_tool_calling: bool = SelectionConfig.require_tool_calling
    models: Optional[list[str]] = None
    screen_examples: int = SelectionConfig.screen_examples
    top_k: int = SelectionConfig.top_k
    log_to_mlflow: bool = True

    def to_core(self) -> SelectionConfig:
        return SelectionConfig(tuple(self.licences), self.max_params_b, self.max_memory_gb, self.memory_precision,
                               self.require_tool_calling, tuple(self.models) if self.models else None,
                               self.screen_examples, self.top_k)


@dg.asset(
    partitions_def=task_cluster_partitions,
    deps=[task_datasets],
    group_name="s4_select",
    kinds={"mlflow", "parquet"},
    description=(
        "Catalogue SLMs filtered by licence, size, memory and context (>= the cluster's p95 prompt + answer), "
        "those with weights on this machine screened zero-shot on validation examples, the top k selected for "
        "fine-tuning. Every candidate is an MLflow run with its decision and the reason."
    ),
)
def slm_candidates(context: dg.AssetExecutionContext, config: SelectionRunConfig, lake: LakeResource
                   ) -> dg.MaterializeResult:
    agent_id, cluster_id = split_task_cluster_key(context.partition_key)
    settings = Settings()
    the_lake = lake.open()
    examples, meta = load_cluster_dataset(the_lake, agent_id, cluster_id)
    partition = cluster_partition(agent_id, cluster_id)
    if meta["status"] != "ready":
        the_lake.write(CANDIDATES_TABLE, partition, candidates_frame([]))
        context.log.info(f"{context.partition_key} stays on the LLM: {meta['reason']}")
        return dg.MaterializeResult(metadata={"status": "stays_on_llm", "reason": meta["reason"], "selected": ""})
    catalogue = load_catalogue(settings.catalogue)
    core = config.to_core()

    def report(candidate: Candidate) -> None:
        context.log.info(f"{candidate.name}: {candidate.decision} ({candidate.reason})")
        if not config.log_to_mlflow:
            return
        row = candidate.row()
        log_run(
            EXPERIMENT, f"{context.partition_key} {candidate.name}",
            params={k: row[k] for k in ("params_b", "licence", "context_length", "memory_gb_bf16", "memory_gb_4bit",
                                        "tool_calling")} | {"model": candidate.name,
                                                            "context_needed": meta["context_needed"]},
            metrics={"zero_shot_exact_acc": row["zero_shot_exact_acc"], "zero_shot_name_acc": row["zero_shot_name_acc"],
                     "zero_shot_valid": row["zero_shot_valid"], "rank": row["rank"],
                     "seconds_per_example": candidate.screen.seconds_per_example if candidate.screen else None},
            tags={"agent_id": agent_id, "cluster_id": cluster_id, "decision": candidate.decision,
                  "reason": candidate.reason[:5000], "dagster_run_id": context.run.run_id, "model": candidate.name},
            artifacts={}, settings=settings,
        )

    candidates = select_candidates(catalogue, examples.filter(pl.col("split") == "validation"),
                                   meta["context_needed"], settings.model_cache_dir, core, on_candidate=report)
    frame = candidates_frame(candidates)
    the_lake.write(CANDIDATES_TABLE, partition, frame)
    selected = [c.name for c in candidates if c.decision == "selected"]
    counts = frame.group_by("decision").len().sort("decision")
    return dg.MaterializeResult(metadata={
        "status": "selected" if selected else "no_candidate",
        "selected": ", ".join(selected),
        "decisions": dg.MetadataValue.json(dict(zip(counts["decision"].to_list(), counts["len"].to_list()))),
        "candidates": dg.MetadataValue.md(frame_to_markdown(frame.select(
            "model", "decision", "rank", "zero_shot_exact_acc", "params_b", "licence", "reason"))),
        "context_needed": meta["context_needed"],
        "mlflow_experiment": EXPERIMENT,
    })
