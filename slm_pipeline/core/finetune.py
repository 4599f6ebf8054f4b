"""S5 around the training process: prepare a run (data, folder, MLflow run, spec), then read its outcome.

Dagster-free, so the asset, the CLI and the benchmarks start training the same way:

    job = prepare_finetune(settings, lake, agent, cluster, "smollm2-135m-instruct", TrainConfig())
    exit_code = subprocess.call(training_command(job.spec_path))   # or through Dagster Pipes
    outcome = finish_finetune(job, exit_code, settings)

The run folder is named after the base model and a fingerprint of the data and the
hyperparameters, so rerunning the same job finds its checkpoints and resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from slm_pipeline.core.lake import Lake, cluster_partition
from slm_pipeline.core.models.catalogue import availability, load_catalogue
from slm_pipeline.core.models.loading import weights_folder
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import load_cluster_dataset
from slm_pipeline.core.tracking import finish_run, stale_runs, start_run
from slm_pipeline.core.train.config import MlflowTarget, TrainConfig, TrainSpec

EXPERIMENT = "slm_pipeline/finetuned_slm"
FINETUNED_TABLE = "finetuned_slms"


def registered_model_name(agent_id: str, cluster_id: str) -> str:
    return f"slm-{agent_id}-{cluster_id}"


@dataclass
class FineTuneJob:
    agent_id: str
    cluster_id: str
    base_model: str
    output_dir: Path
    spec_path: Path
    run_id: str | None
    resumed: bool


@dataclass
class FineTuneOutcome:
    job: FineTuneJob
    status: str  # finished | diverged | out_of_memory | learned_nothing | interrupted | killed | failed
    message: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "finished"


def _fingerprint(examples: pl.DataFrame, base_model: str, config: TrainConfig) -> str:
    digest = hashlib.blake2b(digest_size=6)
    digest.update(base_model.encode())
    digest.update(config.fingerprint().encode())
    for row in examples.sort("call_id").select("call_id", "split", "messages", "completion").iter_rows():
        digest.update("\x1f".join(row).encode())
    return digest.hexdigest()


def prepare_finetune(settings: Settings, lake: Lake, agent_id: str, cluster_id: str, base_model: str,
                     config: TrainConfig, *, dagster_run_id: str | None = None, log_to_mlflow: bool = True,
                     register: bool = True, evaluate_test: bool = True) -> FineTuneJob:
    examples, meta = load_cluster_dataset(lake, agent_id, cluster_id)
    if meta["status"] != "ready":
        raise LookupError(f"{agent_id}:{cluster_id} has no trainable dataset: {meta['reason']}")
    entry = load_catalogue(settings.catalogue).get(base_model)
    folder = weights_folder(availability(entry), settings.model_cache_dir)
    output = settings.models_dir / agent_id / cluster_id / f"{base_model}-{_fingerprint(examples, base_model, config)}"
    output.mkdir(parents=True, exist_ok=True)
    dataset_path = output / "dataset.parquet"
    examples.write_parquet(dataset_path)
    checkpoints = output / "checkpoints"
    resumed = checkpoints.is_dir() and any(p.name.startswith("checkpoint-") for p in checkpoints.iterdir())
    (output / "failure.json").unlink(missing_ok=True)
    run_id = None
    target = None
    if log_to_mlflow:
        for stale in stale_runs(EXPERIMENT, f"tags.output_dir = '{output}'", settings):
            finish_run(stale, "KILLED", tags={"status": "killed", "failure": "the training process died without "
                                              "reporting; a later run resumed from its last checkpoint"},
                       settings=settings)
        tags = {"agent_id": agent_id, "cluster_id": cluster_id, "base_model": base_model, "output_dir": str(output),
                "resumed": str(resumed).lower(), "dagster_run_id": dagster_run_id or ""}
        run_id = start_run(EXPERIMENT, f"{agent_id}:{cluster_id} {base_model}", tags=tags,
                           params={"dataset_examples": examples.height, "task_prompt": meta["task_prompt"]},
                           settings=settings)
        target = MlflowTarget(
            tracking_uri=settings.resolved_mlflow_uri, run_id=run_id,
            registered_model=registered_model_name(agent_id, cluster_id) if register else None,
            model_tags={"agent_id": agent_id, "cluster_id": cluster_id, "base_model": base_model})
    spec = TrainSpec(base_model=base_model, base_folder=str(folder), dataset=str(dataset_path),
                     output_dir=str(output), config=config, mlflow=target, evaluate_test=evaluate_test)
    spec_path = output / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    return FineTuneJob(agent_id, cluster_id, base_model, output, spec_path, run_id, resumed)


_EXIT_STATUS = {0: "finished", 3: "diverged", 4: "out_of_memory", 5: "learned_nothing", 130: "interrupted",
                -2: "interrupted", -9: "killed", 137: "killed", -15: "killed"}


def finish_finetune(job: FineTuneJob, exit_code: int, settings: Settings) -> FineTuneOutcome:
    """Read the run's outcome and end its MLflow run with that status and reason."""
    failure_file, report_file = job.output_dir / "failure.json", job.output_dir / "report.json"
    if exit_code == 0 and report_file.is_file():
        outcome = FineTuneOutcome(job, "finished", "trained", json.loads(report_file.read_text()))
    elif failure_file.is_file():
        failure = json.loads(failure_file.read_text())
        outcome = FineTuneOutcome(job, failure["status"], failure["message"])
    else:
        status = _EXIT_STATUS.get(exit_code, "failed")
        outcome = FineTuneOutcome(job, status if status != "finished" else "failed",
                                  f"the training process exited with code {exit_code} without a report")
    if not outcome.ok and outcome.status != "learned_nothing":  # its reason says what to change instead
        checkpoints = job.output_dir / "checkpoints"
        last = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])) \
            if checkpoints.is_dir() else []
        outcome.message += (f". Rerun to resume from {last[-1].name}" if last else ". Rerun to start again")
    if job.run_id is not None:
        status = {"finished": "FINISHED", "killed": "KILLED"}.get(outcome.status, "FAILED")
        tags = {"status": outcome.status}
        if not outcome.ok:
            tags["failure"] = outcome.message[:5000]
        finish_run(job.run_id, status, tags=tags, settings=settings)
    return outcome


def record_finetuned(lake: Lake, agent_id: str, cluster_id: str, outcomes: list[FineTuneOutcome],
                     trained_on_calls: int | None = None) -> dict[str, Any]:
    """Write the cluster's fine-tuned models (best first by test exact accuracy) for S6 to evaluate and serve.

    `trained_on_calls`: the cluster's curated calls when its dataset was built (retraining compares).
    """
    finished = sorted((o for o in outcomes if o.ok), key=lambda o: -(o.report.get("test_exact_acc") or 0.0))
    record = {"agent_id": agent_id, "cluster_id": cluster_id, "trained_on_calls": trained_on_calls, "models": [{
        "base_model": o.job.base_model, "output_dir": str(o.job.output_dir), "adapter": o.report.get("adapter"),
        "mlflow_run_id": o.job.run_id, "registered_model": o.report.get("registered_model"),
        "model_version": o.report.get("model_version"),
        "test_exact_acc": o.report.get("test_exact_acc"), "test_name_acc": o.report.get("test_name_acc"),
        "fitting": o.report.get("fitting"),
    } for o in finished], "failures": [
        {"base_model": o.job.base_model, "status": o.status, "message": o.message, "mlflow_run_id": o.job.run_id}
        for o in outcomes if not o.ok]}
    lake.put_file(FINETUNED_TABLE, cluster_partition(agent_id, cluster_id), "models.json",
                  json.dumps(record, indent=2).encode())
    return record
