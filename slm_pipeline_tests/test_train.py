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

from slm_pipeline.core.train.config import MlflowTarget, TrainConfig, TrainSpec
from slm_pipeline.core.train.launch import training_command
from slm_pipeline.core.train.run import build_trainer, train

FAST = dict(learning_rate=3e-2, batch_size=2, max_length=512, eval_steps=4, save_steps=4)


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


def _rewrite(dataset: Path, path: Path, **columns) -> Path:
    import polars as pl

    frame = pl.read_parquet(dataset)
    frame.with_columns(**{k: v(frame) if callable(v) else pl.lit(v) for k, v in columns.items()}).write_parquet(path)
    return path


def test_a_dataset_without_answers_fails_as_learned_nothing_and_produces_no_model(
        tmp_path: Path, tiny_model_folder: Path, refund_dataset: Path):
    from slm_pipeline.core.train.run import TrainingFailed

    empty = _rewrite(refund_dataset, tmp_path / "empty.parquet", completion="")
    with pytest.raises(TrainingFailed) as failure:
        train(_spec(tmp_path, tiny_model_folder, empty, max_steps=2))
    assert failure.value.status == "learned_nothing"
    assert "no training example with an answer" in str(failure.value) and "empty_answer" in str(failure.value)
    assert not (tmp_path / "run" / "adapter").exists() and not (tmp_path / "run" / "report.json").exists()


def test_a_batch_with_no_answer_token_and_a_zero_or_nan_first_loss_fail_with_what_to_change(
        tmp_path: Path, tiny_model_folder: Path, refund_dataset: Path):
    from slm_pipeline.core.train.run import AnswerTokenGuard, TrainingFailed, check_first_loss, check_learned

    prepared = build_trainer(_spec(tmp_path, tiny_model_folder, refund_dataset, max_steps=1))
    assert isinstance(prepared.trainer.data_collator, AnswerTokenGuard)
    inner = prepared.trainer.data_collator.collator
    features = [prepared.trainer.train_dataset[0]]
    assert (prepared.trainer.data_collator(features)["labels"] != -100).any()
    features[0] = {**features[0], "labels": [-100] * len(features[0]["input_ids"])}
    assert (inner(features)["labels"] == -100).all()  # what a batch whose answers were cut off looks like
    with pytest.raises(TrainingFailed, match="no answer token carrying loss") as failure:
        prepared.trainer.data_collator(features)
    assert failure.value.status == "learned_nothing" and "max_length_budget" in str(failure.value)
    for loss in (0.0, float("nan")):
        with pytest.raises(TrainingFailed, match="first logged step") as failure:
            check_first_loss(loss, 1)
        assert failure.value.status == "learned_nothing"
    check_first_loss(2.5, 1)
    with pytest.raises(TrainingFailed, match="did not fall"):
        check_learned([{"loss": v} for v in (2.0, 2.1, 2.0, 2.05, 1.9, 2.2, 2.0, 2.1)])
    check_learned([{"loss": v} for v in (2.0, 1.9, 2.2, 1.5)])  # too short to judge: a smoke run passes
    # A noisy batch at the end does not fail a run whose loss fell; the eval loss is not the training loss.
    check_learned([{"loss": 2.0}, {"loss": 1.9}, {"eval_loss": 3.0},
                   *({"loss": v} for v in (1.6, 1.4, 1.3, 1.1, 0.9, 2.1))])


def test_a_loss_that_does_not_fall_fails_the_process_and_registers_nothing(
        tmp_path: Path, tiny_model_folder: Path, refund_dataset: Path):
    import mlflow
    import polars as pl

    frame = pl.read_parquet(refund_dataset)
    first = frame.filter(pl.col("split") == "train").head(1)
    same = pl.concat([first] * 12).with_columns(call_id=pl.format("c{}", pl.int_range(pl.len())))
    dataset = tmp_path / "same.parquet"
    same.write_parquet(dataset)  # identical examples and a learning rate too small to move: a flat loss
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    run_id = mlflow.MlflowClient().create_run(mlflow.create_experiment("t", (tmp_path / "art").as_uri())).info.run_id
    spec = _spec(tmp_path, tiny_model_folder, dataset, max_steps=8, learning_rate=1e-12, warmup_ratio=0.0,
                 batch_size=1, packing=False).model_copy(update={"mlflow": MlflowTarget(
                     tracking_uri=uri, run_id=run_id, registered_model="slm-support-bot-c1")})
    process = _run_process(spec, tmp_path / "spec.json")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 5, output
    failure = json.loads((Path(spec.output_dir) / "failure.json").read_text())
    assert failure["status"] == "learned_nothing" and "did not fall" in failure["message"]
    assert "raise learning_rate" in failure["message"]
    assert not (Path(spec.output_dir) / "adapter").exists()
    assert mlflow.MlflowClient().search_model_versions("name='slm-support-bot-c1'") == []
    assert mlflow.get_run(run_id).data.metrics["fit.kept"] == 12


def test_sigterm_stops_the_training_process_as_interrupted_and_a_rerun_resumes(
        tmp_path: Path, tiny_model_folder: Path, refund_dataset: Path):
    from slm_pipeline.core.finetune import FineTuneJob, finish_finetune
    from slm_pipeline.core.settings import Settings

    spec = _spec(tmp_path, tiny_model_folder, refund_dataset, max_steps=400, save_steps=2, eval_steps=1000)
    checkpoints = Path(spec.output_dir) / "checkpoints"
    process = _run_process(spec, tmp_path / "spec.json")
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)  # within seconds, not after the remaining steps
    assert process.returncode == 130, output
    failure = json.loads((Path(spec.output_dir) / "failure.json").read_text())
    assert failure["status"] == "interrupted" and "SIGTERM" in failure["message"]
    assert not (Path(spec.output_dir) / "adapter").exists()
    job = FineTuneJob("a", "c", "tiny-llama", Path(spec.output_dir), tmp_path / "spec.json", None, False)
    outcome = finish_finetune(job, process.returncode, Settings())
    assert outcome.status == "interrupted" and "Rerun to resume from checkpoint-" in outcome.message
