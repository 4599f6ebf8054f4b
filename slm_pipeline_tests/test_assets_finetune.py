"""S4 -> S5 in Dagster: datasets, candidates, and the real embedded SmolLM2 fine-tuned through Pipes."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
import pytest

from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE
from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.finetune import EXPERIMENT, FINETUNED_TABLE
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake, cluster_partition
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.store import LogStore
from slm_pipeline.definitions import defs
from slm_pipeline.partitions import agent_partitions, task_cluster_key

AGENT_ASSETS = [dg.AssetKey(n) for n in ("raw_agent_calls", "curated_calls", "task_clusters")]
CLUSTER_ASSETS = [dg.AssetKey(n) for n in ("task_datasets", "slm_candidates", "finetuned_slm")]


@pytest.fixture
def clustered_home(embedded_home: Path, tmp_path: Path, test_catalogue: Path, monkeypatch: pytest.MonkeyPatch):
    """support-bot's demo calls through S1-S3 in a test instance; yields (instance, its largest tool cluster key)."""
    monkeypatch.setenv("SLM_PIPELINE_CATALOGUE", str(test_catalogue))
    write_demo_traffic(tmp_path / "t.jsonl", 900, seed=41)
    with LogStore(Settings().resolved_database_url) as store:
        import_files(store, [tmp_path / "t.jsonl"], tmp_path / "q")
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, ["support-bot"])
        assert job.execute_in_process(instance=instance, partition_key="support-bot", asset_selection=AGENT_ASSETS,
                                      run_config={"ops": {"curated_calls": {"config": {"workers": 1}}}}).success
        clusters = Lake(Settings().resolved_lake_url).read(CLUSTERS_TABLE, "support-bot")
        tool = clusters.filter(pl.col("answer_kinds").list.contains("tool_call")).sort("size", descending=True)
        yield instance, task_cluster_key("support-bot", tool["cluster_id"][0])


def _run(instance, key: str, config: dict) -> dg.ExecuteInProcessResult:  # noqa: ANN001
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, partition_key=key, asset_selection=CLUSTER_ASSETS,
                                  run_config={"ops": {k: {"config": v} for k, v in config.items()}},
                                  raise_on_error=False)


def _failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step with its reason, so that a red test says which step failed and why."""
    reasons = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            reason = data.user_failure_data.description if data.user_failure_data else \
                (data.error.to_string() if data.error else "?")
            reasons.append(f"{event.step_key}: {reason}")
    return reasons


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict:
    materializations = result.asset_materializations_for_node(node)
    assert len(materializations) == 1, f"{node} materialized {len(materializations)} times; {_failures(result)}"
    [materialization] = materializations
    return {k: v.value for k, v in materialization.metadata.items()}


def test_embedded_smollm2_is_selected_finetuned_through_pipes_and_registered(clustered_home):
    instance, key = clustered_home
    result = _run(instance, key, {
        "slm_candidates": {"models": ["smollm2-135m-instruct"], "screen_examples": 4},
        "finetuned_slm": {"max_steps": 4, "batch_size": 2, "eval_steps": 2, "save_steps": 2},
    })
    assert result.success, _failures(result)
    dataset = _meta(result, "task_datasets")
    assert dataset["status"] == "ready" and dataset["train"] > dataset["test"] > 0
    assert "<tool_call> JSON for one of" in dataset["task_prompt"]
    assert all(c.passed for c in result.get_asset_check_evaluations())
    candidates = _meta(result, "slm_candidates")
    assert candidates["selected"] == "smollm2-135m-instruct"
    assert "| qwen2.5-0.5b-instruct | excluded |" in candidates["candidates"]  # every entry listed with a reason

    tuned = _meta(result, "finetuned_slm")
    assert tuned["status"] == "trained" and tuned["steps"] == 4 and 0 <= tuned["test_exact_acc"] <= 1
    assert tuned["loss_curve"].startswith("![loss curve](data:image/png;base64,")
    assert tuned["registered_model"] == f"slm-{key.replace(':', '-')} v1"
    # The training process streamed its log lines back through Pipes.
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert any("step 4/4 · loss" in m and "tokens/s" in m for m in logs) and any("evaluating on" in m for m in logs)

    settings = Settings()
    client = mlflow.MlflowClient(settings.resolved_mlflow_uri)
    run = client.get_run(tuned["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["base_model"] == "smollm2-135m-instruct"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(losses) == 4 and all(0 < v < 10 for v in losses)
    # LoRA on the real model learns within a few steps. Judged on the validation loss (the same examples at
    # steps 2 and 4): the training loss of single batches of two is too noisy to judge in four steps.
    validation = [m.value for m in client.get_metric_history(run.info.run_id, "eval/loss")]
    assert len(validation) == 2 and validation[1] < validation[0]
    assert "test_exact_acc" in run.data.metrics and run.data.params["train.method"] == "lora"
    [version] = client.search_model_versions(f"name='slm-{key.replace(':', '-')}'")
    assert version.tags["agent_id"] == "support-bot" and version.tags["base_model"] == "smollm2-135m-instruct"
    screened = client.search_runs([client.get_experiment_by_name("slm_pipeline/slm_candidates").experiment_id])
    assert {r.data.tags["decision"] for r in screened} >= {"selected", "excluded"}

    agent, cluster = key.split(":")
    record = json.loads(Lake(settings.resolved_lake_url).get_file(FINETUNED_TABLE, cluster_partition(agent, cluster),
                                                                  "models.json"))
    assert record["models"][0]["base_model"] == "smollm2-135m-instruct"
    assert Path(record["models"][0]["adapter"], "adapter_model.safetensors").is_file()


def test_diverging_training_fails_the_asset_and_the_mlflow_run_with_the_reason(clustered_home):
    instance, key = clustered_home
    result = _run(instance, key, {
        "slm_candidates": {"models": ["tiny-llama"], "screen_examples": 2},
        "finetuned_slm": {"method": "full", "learning_rate": 1e12, "warmup_ratio": 0.0, "max_steps": 20,
                          "batch_size": 2, "eval_steps": 50, "save_steps": 50},
    })
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert failure.step_key == "finetuned_slm" and "diverged" in message and "lower learning_rate" in message
    client = mlflow.MlflowClient(Settings().resolved_mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["status"] == "diverged"
    assert "lower learning_rate" in run.data.tags["failure"]


def test_two_deepspeed_ranks_through_pipes_report_once(clustered_home):
    instance, key = clustered_home
    result = _run(instance, key, {
        "slm_candidates": {"models": ["tiny-llama"], "screen_examples": 2},
        "finetuned_slm": {"processes": 2, "deepspeed": "zero2", "max_steps": 4, "batch_size": 2,
                          "learning_rate": 3e-2, "eval_steps": 50, "save_steps": 50, "evaluate_test": False},
    })
    assert result.success, _failures(result)
    tuned = _meta(result, "finetuned_slm")
    assert tuned["status"] == "trained" and tuned["best_base_model"] == "tiny-llama"
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert sum("step 4/4 · loss" in m for m in logs) == 1  # rank 0 alone reports through Pipes
    client = mlflow.MlflowClient(Settings().resolved_mlflow_uri)
    run = client.get_run(tuned["mlflow_run_id"])
    assert run.data.params["world_size"] == "2" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4]
