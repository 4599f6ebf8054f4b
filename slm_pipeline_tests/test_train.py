"""S5 training on a tiny model: packing with answer-only loss, checkpoints and resume, failures, MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from slm_pipeline.core.task_data import build_task_dataset
from slm_pipeline.core.train.config import MlflowTarget, TrainConfig, TrainSpec
from slm_pipeline.core.train.launch import training_command
from slm_pipeline.core.train.run import build_trainer, train
from slm_pipeline_tests.conftest import cluster_examples

FAST = dict(learning_rate=3e-2, batch_size=2, max_length=512, eval_steps=4, save_steps=4)


@pytest.fixture(scope="session")
def refund_dataset(curated_demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dataset = build_task_dataset("support-bot", "c1", "refund request",
                                 cluster_examples(curated_demo, "support.refund_request"))
    path = tmp_path_factory.mktemp("dataset") / "refund.parquet"
    dataset.examples.write_parquet(path)
    return path


def _spec(tmp_path: Path, folder: Path, dataset: Path, **config) -> TrainSpec:
    return TrainSpec(base_model="tiny-llama", base_folder=str(folder), dataset=str(dataset),
                     output_dir=str(tmp_path / "run"), config=TrainConfig(**{**FAST, **config}), evaluate_test=False)


def test_packed_batches_carry_loss_on_answer_tokens_only(tmp_path: Path, tiny_model_folder: Path, refund_dataset: Path):
    prepared = build_trainer(_spec(tmp_path, tiny_model_folder, refund_dataset, max_steps=1))
    batch = next(iter(prepared.trainer.get_train_dataloader()))
    tokenizer = prepared.tokenizer
    assert batch["input_ids"].shape[0] == 1  # padding-free: the packed examples are one row, no pad tokens
    assert (batch["input_ids"] != tokenizer.pad_token_id).sum() > 0.9 * batch["input_ids"].numel()
    position_starts = (batch["position_ids"][0] == 0).sum().item()
    assert position_starts > 1  # several examples, each restarting its positions
    labelled = tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100])
    assert labelled.count("<tool_call>") == position_starts  # one answer per example ...
    assert "Task: refund request" not in labelled and "refund" not in labelled.replace("issue_refund", "")  # ... no prompt


def test_lora_run_learns_saves_adapter_and_logs_to_mlflow(tmp_path: Path, tiny_model_folder: Path,
                                                         refund_dataset: Path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    run_id = mlflow.MlflowClient().create_run(mlflow.create_experiment("t", (tmp_path / "art").as_uri())).info.run_id
    spec = _spec(tmp_path, tiny_model_folder, refund_dataset, max_steps=12).model_copy(update={
        "mlflow": MlflowTarget(tracking_uri=uri, run_id=run_id, registered_model="slm-support-bot-c1",
                               model_tags={"agent_id": "support-bot", "cluster_id": "c1", "base_model": "tiny-llama"}),
        "evaluate_test": True})
    report = train(spec)
    losses = [h["train/loss"] for h in json.loads((tmp_path / "run" / "history.json").read_text()) if "train/loss" in h]
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.3  # adapters on a random 2-layer base learn slowly; SmolLM2 fast
    assert report["global_step"] == 12 and report["tokens_per_second"] > 0
    adapter = Path(report["adapter"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tokenizer.json").is_file()
    assert {"test_exact_acc", "test_name_acc", "test_valid"} <= set(report)
    run = mlflow.get_run(run_id)
    assert run.data.params["train.method"] == "lora" and run.data.params["base_model"] == "tiny-llama"
    losses = mlflow.MlflowClient().get_metric_history(run_id, "train/loss")
    assert [m.step for m in losses] == list(range(1, 13))  # one point per step, logged once
    assert len(mlflow.MlflowClient().get_metric_history(run_id, "train/learning_rate")) == 12
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"adapter", "loss_curve.png", "report.json", "history.json"} <= artifacts
    [version] = mlflow.MlflowClient().search_model_versions("name='slm-support-bot-c1'")
    assert version.tags == {"agent_id": "support-bot", "cluster_id": "c1", "base_model": "tiny-llama"}
    assert version.run_id == run_id and version.source.endswith("/adapter")


def test_full_finetune_and_padded_baseline_trainer(tmp_path: Path, tiny_model_folder: Path, refund_dataset: Path):
    full = train(_spec(tmp_path / "full", tiny_model_folder, refund_dataset, method="full", max_steps=8,
                       learning_rate=3e-3))
    assert (Path(full["adapter"]) / "model.safetensors").is_file() and full["adapter"].endswith("/model")
    assert full["final_train_loss"] < 0.93 * full["first_train_loss"]
    padded = train(_spec(tmp_path / "hf", tiny_model_folder, refund_dataset, trainer="hf", packing=False,
                         completion_only_loss=False, max_steps=3))
    assert padded["global_step"] == 3


def _run_process(spec: TrainSpec, path: Path, **kwargs) -> subprocess.Popen:
    path.write_text(spec.model_dump_json())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(training_command(path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def test_nan_loss_and_cpu_qlora_end_with_a_clear_status(tmp_path: Path, tiny_model_folder: Path,
                                                        refund_dataset: Path):
    spec = _spec(tmp_path, tiny_model_folder, refund_dataset, max_steps=20, learning_rate=1e12, warmup_ratio=0.0,
                 method="full")
    process = _run_process(spec, tmp_path / "spec.json")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 3, output
    failure = json.loads((Path(spec.output_dir) / "failure.json").read_text())
    assert failure["status"] == "diverged" and "lower learning_rate" in failure["message"]

    qlora = _spec(tmp_path / "q", tiny_model_folder, refund_dataset, method="qlora")
    process = _run_process(qlora, tmp_path / "q.json")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1 and "method=qlora needs a CUDA GPU" in output


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_killed_training_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
        tmp_path: Path, tiny_model_folder: Path, refund_dataset: Path):
    steps = dict(max_steps=12, save_steps=4, eval_steps=100, save_total_limit=5)
    reference = train(_spec(tmp_path / "ref", tiny_model_folder, refund_dataset, **steps))

    spec = _spec(tmp_path / "killed", tiny_model_folder, refund_dataset, **steps)
    checkpoints = Path(spec.output_dir) / "checkpoints"
    process = _run_process(spec, tmp_path / "spec.json")
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-8" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (Path(spec.output_dir) / "report.json").exists()

    resumed = _run_process(spec, tmp_path / "spec.json")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resuming from" in output and "checkpoint-" in output
    report = json.loads((Path(spec.output_dir) / "report.json").read_text())
    assert report["global_step"] == 12 and report["resumed_from"]
    ours, theirs = _adapter_weights(Path(report["adapter"])), _adapter_weights(Path(reference["adapter"]))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-3, atol=1e-4)
