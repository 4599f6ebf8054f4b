"""Fine-tuning hyperparameters (documented defaults) and the spec a training process runs from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEEPSPEED_CONFIGS = {name: Path(__file__).with_name("deepspeed") / f"{name}.json" for name in ("zero2", "zero3")}


class TrainConfig(BaseModel):
    """How one cluster's SLM is fine-tuned. Defaults suit a 135M-3B model on a few hundred examples."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="lora: adapters on all linear layers; qlora: the same on a 4-bit base (CUDA only); "
        "full: every weight.")
    trainer: Literal["sft", "hf"] = Field(
        "sft", description="sft: TRL's SFTTrainer (packing, completion-only loss); hf: transformers' Trainer "
        "with a padded, unpacked collator (the benchmark's baseline).")
    padding: Literal["max_length", "longest"] = Field(
        "max_length", description="trainer=hf only: pad each example to max_length (naive) or to the batch's longest.")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str = Field("all-linear", description="peft target_modules: all-linear, or comma-separated names")
    learning_rate: float = Field(1e-3, gt=0, description="1e-3 for LoRA on small models; use ~2e-5 for full.")
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = 0.0
    epochs: float = Field(2.0, gt=0)
    max_steps: int = Field(-1, description="Cap on optimizer steps (-1: epochs decide).")
    batch_size: int = Field(4, ge=1, description="Sequences per device and step (a packed sequence counts as one).")
    gradient_accumulation: int = Field(1, ge=1)
    max_length: int | None = Field(
        None, ge=32, description="Tokens per (packed) sequence; None: from the data (the cluster's longest example "
        "rounded up to a multiple of 64, at most max_length_budget). See core/train/fitting.py.")
    max_length_budget: int = Field(
        2048, ge=64, description="Upper bound of the sequence length taken from the data (memory and time per step "
        "grow with it); longer examples lose their oldest turns, or are dropped as too_long.")
    packing: bool = Field(True, description="Pack examples into sequences without padding (BFD).")
    completion_only_loss: bool = Field(True, description="Loss on the answer tokens only.")
    gradient_checkpointing: bool = False
    eval_steps: int = Field(25, ge=1)
    save_steps: int = Field(25, ge=1, description="Checkpoint interval; a rerun resumes from the last one.")
    save_total_limit: int = 2
    seed: int = 42
    deepspeed: str | None = Field(None, description="zero2, zero3, or a path to a DeepSpeed JSON config.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")

    def fingerprint(self) -> str:
        """Hash of what changes the result (not eval/save cadence), for checkpoint folders."""
        fields = self.model_dump(exclude={"eval_steps", "save_steps", "save_total_limit"})
        return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=6).hexdigest()

    def deepspeed_config(self) -> str | None:
        if self.deepspeed is None:
            return None
        if self.deepspeed in DEEPSPEED_CONFIGS:
            return str(DEEPSPEED_CONFIGS[self.deepspeed])
        if not Path(self.deepspeed).is_file():
            raise ValueError(f"deepspeed={self.deepspeed!r} is neither zero2, zero3 nor an existing JSON file")
        return self.deepspeed


class MlflowTarget(BaseModel):
    """Where the training process logs: an existing run (created by the caller) and the model registry."""

    tracking_uri: str
    run_id: str
    registered_model: str | None = None
    model_tags: dict[str, str] = Field(default_factory=dict)


class TrainSpec(BaseModel):
    """Everything a training process needs, as JSON (the process may run under the deepspeed launcher)."""

    base_model: str  # catalogue name
    base_folder: str  # weights folder (from_pretrained)
    dataset: str  # Parquet file of task_data.DATASET_SCHEMA rows
    output_dir: str  # checkpoints/, adapter/, report.json
    config: TrainConfig = Field(default_factory=TrainConfig)
    mlflow: MlflowTarget | None = None
    evaluate_test: bool = True  # generate on the test split at the end
