"""S5 fine-tune: `finetuned_slm`, each selected candidate trained on the cluster's dataset.

Training runs as its own process (one, or N ranks under the deepspeed launcher), launched
through Dagster Pipes: its log lines and per-step metrics stream into this run's logs, and
rank 0 records everything in the MLflow run this asset opens for it.
"""

import re
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
import polars as pl
from dagster._core.errors import DagsterPipesExecutionError  # not re-exported by `dagster`
from pydantic import Field, create_model

from slm_pipeline.assets.candidates import CANDIDATES_TABLE, slm_candidates
from slm_pipeline.core.finetune import (
    EXPERIMENT,
    FineTuneOutcome,
    finish_finetune,
    prepare_finetune,
    record_finetuned,
)
from slm_pipeline.core.k8s_gpu import gpu_step_tags
from slm_pipeline.core.lake import cluster_partition
from slm_pipeline.core.markdown import frame_to_markdown, png_markdown
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import load_cluster_dataset
from slm_pipeline.core.train.config import TrainConfig
from slm_pipeline.core.train.launch import training_command
from slm_pipeline.partitions import split_task_cluster_key, task_cluster_partitions
from slm_pipeline.resources import LakeResource
from slm_pipeline.training_process import TRAIN_LOG_ENV


class _LaunchConfig(dg.Config):
    processes: int = Field(1, description="Training processes (GPUs); more than 1 runs the deepspeed launcher.")
    launcher: Literal["auto", "python", "deepspeed"] = Field(
        "auto", description="auto: deepspeed when processes > 1, else plain python.")
    candidates: Optional[int] = Field(None, description="Train only the first N selected candidates.")
    register_model: bool = Field(True, description="Register each adapter as an MLflow model version.")
    evaluate_test: bool = Field(True, description="Generate on the test split after training.")

    def to_core(self) -> TrainConfig:
        return TrainConfig(**self.model_dump(include=set(TrainConfig.model_fields)))


FineTuneRunConfig = create_model(
    "FineTuneRunConfig", __base__=_LaunchConfig,
    __doc__="S5 hyperparameters (every `TrainConfig` field, same defaults and descriptions) and how to launch.",
    **{name: (field.annotation, Field(field.default, description=field.description))
       for name, field in TrainConfig.model_fields.items()},
)


def _png_md(path: Path, title: str) -> Optional[dg.MetadataValue]:
    if not path.is_file():
        return None
    return dg.MetadataValue.md(png_markdown(path.read_bytes(), title))


@dg.asset(
    partitions_def=task_cluster_partitions,
    deps=[slm_candidates],
    group_name="s5_finetune",
    kinds={"pytorch", "mlflow", "deepspeed"},
    pool="gpu",  # training jobs queue for the accelerators (limit: dagster.yaml `concurrency.pools`)
    op_tags=gpu_step_tags(),  # its pod's GPU on Kubernetes (k8s_job_executor); see core/k8s_gpu.py
    description=(
        "Each selected candidate fine-tuned on the cluster's dataset (LoRA by default; QLoRA on CUDA; full), "
        "with packing and loss on answer tokens only, in its own process (DeepSpeed for several GPUs). Every "
        "run is an MLflow run with per-step curves, test metrics, the adapter and a registered model version."
    ),
)
def finetuned_slm(context: dg.AssetExecutionContext, config: FineTuneRunConfig, lake: LakeResource,
                  pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    agent_id, cluster_id = split_task_cluster_key(context.partition_key)
    settings, the_lake = Settings(), lake.open()
    _, meta = load_cluster_dataset(the_lake, agent_id, cluster_id)
    candidates = the_lake.read(CANDIDATES_TABLE, cluster_partition(agent_id, cluster_id))
    selected = [] if candidates is None else (
        candidates.filter(pl.col("decision") == "selected").sort("rank")["model"].to_list())
    if config.candidates is not None:
        selected = selected[:config.candidates]
    if meta["status"] != "ready" or not selected:
        reason = meta["reason"] if meta["status"] != "ready" else "no candidate SLM was selected (see slm_candidates)"
        context.log.info(f"{context.partition_key} stays on the LLM: {reason}")
        record_finetuned(the_lake, agent_id, cluster_id, [])
        return dg.MaterializeResult(metadata={"status": "stays_on_llm", "reason": reason})

    outcomes: list[FineTuneOutcome] = []
    for base_model in selected:
        job = prepare_finetune(settings, the_lake, agent_id, cluster_id, base_model, config.to_core(),
                               dagster_run_id=context.run.run_id, register=config.register_model,
                               evaluate_test=config.evaluate_test)
        context.log.info(f"training {base_model} in {job.output_dir}"
                         + (" (resuming from its last checkpoint)" if job.resumed else ""))
        command = training_command(job.spec_path, config.processes, config.launcher)
        try:
            # Third-party warnings and progress bars go to the run folder's train.log; the console and the
            # Dagster run get the project's own lines (step · loss · tokens/s · time left) through Pipes.
            pipes_subprocess_client.run(command=command, context=context,
                                        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                                             "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                                             TRAIN_LOG_ENV: str(job.output_dir / "train.log")})
            exit_code = 0
        except DagsterPipesExecutionError as exc:
            exit_code = _exit_code(str(exc))
        outcome = finish_finetune(job, exit_code, settings)
        context.log.info(f"{base_model}: {outcome.status} ({outcome.message})")
        outcomes.append(outcome)

    record = record_finetuned(the_lake, agent_id, cluster_id, outcomes, trained_on_calls=meta.get("calls"))
    failed = [o for o in outcomes if not o.ok]
    if failed and not record["models"]:
        first = failed[0]
        raise dg.Failure(
            description=f"training {first.job.base_model} for {context.partition_key} {first.status}: {first.message}",
            metadata={"status": first.status, "mlflow_run_id": first.job.run_id or "",
                      "output_dir": dg.MetadataValue.path(str(first.job.output_dir))})
    best = next(o for o in outcomes if o.ok and o.job.base_model == record["models"][0]["base_model"])
    table = pl.DataFrame([{
        "base_model": o.job.base_model, "status": o.status, "steps": o.report.get("global_step"),
        "final_loss": o.report.get("final_train_loss"), "test_exact_acc": o.report.get("test_exact_acc"),
        "test_name_acc": o.report.get("test_name_acc"), "tokens_per_s": o.report.get("tokens_per_second"),
        "mlflow_run_id": o.job.run_id,
    } for o in outcomes])
    metadata = {
        "status": "trained", "best_base_model": best.job.base_model,
        "test_exact_acc": best.report.get("test_exact_acc"), "test_name_acc": best.report.get("test_name_acc"),
        "final_train_loss": best.report.get("final_train_loss"), "steps": best.report.get("global_step"),
        "resumed_from": best.report.get("resumed_from") or "",
        "runs": dg.MetadataValue.md(frame_to_markdown(table)),
        "adapter": dg.MetadataValue.path(best.report.get("adapter", "")),
        "mlflow_run_id": best.job.run_id or "", "mlflow_experiment": EXPERIMENT,
        "registered_model": f"{best.report.get('registered_model')} v{best.report.get('model_version')}"
        if best.report.get("registered_model") else "",
        "test_failures": dg.MetadataValue.json(best.report.get("test_failures", [])),
    }
    fitting = best.report.get("fitting") or {}
    if fitting:
        metadata["max_length"] = fitting.get("max_length")
        metadata["examples_fitted"] = dg.MetadataValue.md(frame_to_markdown(pl.DataFrame([{
            "examples": fitting.get("examples"), "kept": fitting.get("kept"), "tokens_p50": fitting.get("tokens_p50"),
            "tokens_p95": fitting.get("tokens_p95"), "tokens_max": fitting.get("tokens_max"),
            "shortened": fitting.get("shortened"),
            "dropped": ", ".join(f"{n} {r}" for r, n in sorted((fitting.get("dropped") or {}).items())) or "none",
        }])))
    if (curve := _png_md(best.job.output_dir / "loss_curve.png", "loss curve")) is not None:
        metadata["loss_curve"] = curve
    return dg.MaterializeResult(metadata={k: v for k, v in metadata.items() if v is not None})


def _exit_code(message: str) -> int:
    """The return code in Dagster's 'External execution process failed with code N' message."""
    match = re.search(r"code (-?\d+)", message)
    return int(match.group(1)) if match else 1

