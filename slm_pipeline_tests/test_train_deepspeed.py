"""The real `deepspeed` launcher over 2 CPU processes (DeepSpeed's CPU accelerator, gloo): ZeRO-3 here, ZeRO-2 in
test_assets_finetune (two ranks through Dagster Pipes)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import pytest

from slm_pipeline.core.train.config import MlflowTarget, TrainConfig, TrainSpec
from slm_pipeline.core.train.launch import training_command


@pytest.fixture(scope="module")
def refund_parquet(curated_demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slm_pipeline.core.task_data import build_task_dataset
    from slm_pipeline_tests.conftest import cluster_examples

    path = tmp_path_factory.mktemp("ds-data") / "refund.parquet"
    build_task_dataset("support-bot", "c1", "refund", cluster_examples(curated_demo, "support.refund_request")
                       ).examples.write_parquet(path)
    return path


# ZeRO-2 under the same launcher is test_assets_finetune's two ranks through Dagster Pipes; this one runs ZeRO-3
# (sharded parameters), checkpoints and the registered version (a minute of the suite per stage).
@pytest.mark.parametrize("stage", ["zero3"])
def test_deepspeed_launcher_trains_on_two_cpu_ranks_and_reports_once(stage: str, tmp_path: Path,
                                                                      tiny_model_folder: Path, refund_parquet: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    run_id = client.create_run(mlflow.create_experiment("ds", (tmp_path / "art").as_uri())).info.run_id
    spec = TrainSpec(
        base_model="tiny-llama", base_folder=str(tiny_model_folder), dataset=str(refund_parquet),
        output_dir=str(tmp_path / "run"), evaluate_test=False,
        config=TrainConfig(max_steps=8, batch_size=2, max_length=512, learning_rate=3e-2, deepspeed=stage,
                           eval_steps=100, save_steps=4),
        mlflow=MlflowTarget(tracking_uri=uri, run_id=run_id, registered_model="slm-ds-test",
                            model_tags={"agent_id": "a", "cluster_id": "c", "base_model": "tiny-llama"}))
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    command = training_command(spec_path, processes=2, launcher="deepspeed")
    assert Path(command[0]).name == "deepspeed" and command[command.index("--num_gpus") + 1] == "2"
    done = subprocess.run(command, capture_output=True, text=True, timeout=800,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["world_size"] == 2 and report["global_step"] == 8
    history = [h["train/loss"] for h in json.loads((tmp_path / "run" / "history.json").read_text())
               if "train/loss" in h]
    assert sum(history[-3:]) < sum(history[:3])  # the adapter trained: loss went down
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4").is_dir()
    # Logged once: rank 0 alone writes metrics, params and the model version.
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(1, 9))
    assert len(client.search_model_versions("name='slm-ds-test'")) == 1
    assert client.get_run(run_id).data.params["world_size"] == "2"
