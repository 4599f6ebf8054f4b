"""One fine-tuning run: dataset -> (packed, answer-only loss) training -> adapter, metrics, MLflow run.

`train(spec, reporter)` is the whole run. It works in one process, or in each of N processes
under the `deepspeed` launcher (or torchrun): every rank trains, only rank 0 writes the
adapter, evaluates, and reports to MLflow and to the caller's reporter (Dagster Pipes).

A rerun with the same base model, data and hyperparameters resumes from the last
checkpoint in `output_dir/checkpoints`. Failures end with `TrainingFailed` whose `status`
is one of: diverged (NaN or infinite loss), out_of_memory, learned_nothing, interrupted, failed.

Before training the examples are fitted into the sequence length (`fitting.fit_examples`): no
example is trained with its answer cut off. A training that learns nothing fails as
`learned_nothing` before anything is saved or registered: no example with an answer, a batch
with no answer token carrying loss, a first logged loss of exactly 0 or NaN, or a loss that
never falls below its first value.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from slm_pipeline.core.evaluate import evaluate
from slm_pipeline.core.train.config import TrainSpec
from slm_pipeline.core.train.fitting import Fitted, fit_examples


class Reporter(Protocol):
    def log(self, message: str) -> None: ...
    def metrics(self, step: int, values: dict[str, float]) -> None: ...


class PrintReporter:
    def log(self, message: str) -> None:
        print(message, flush=True)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass


class TrainingFailed(RuntimeError):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _mlflow(spec: TrainSpec):  # noqa: ANN202 - the mlflow module, pointed at the spec's store
    import mlflow

    assert spec.mlflow is not None
    mlflow.set_tracking_uri(spec.mlflow.tracking_uri)
    return mlflow


def _fit(frame: pl.DataFrame, tokenizer: Any, budget: int, max_length: int | None) -> Fitted:
    return fit_examples(frame.select("call_id", "messages", "completion").to_dicts(), tokenizer, budget=budget,
                        max_length=max_length)


LEARNED_NOTHING_HELP = ("check that the cluster's answers are not empty and fit max_length_budget, "
                        "and raise learning_rate or max_steps")


class AnswerTokenGuard:
    """Wraps a collator: a batch in which no token carries loss (every label -100) fails the run."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, features: list[Any]) -> Any:
        batch = self.collator(features)
        require_answer_tokens(batch)
        return batch


def require_answer_tokens(batch: Any) -> None:
    labels = batch.get("labels") if hasattr(batch, "get") else None
    if labels is not None and int((labels != -100).sum()) == 0:
        raise TrainingFailed(
            "learned_nothing", f"a training batch of {int(labels.numel())} tokens has no answer token carrying "
            "loss (every label is -100): the answers were cut off or are empty; raise max_length_budget, "
            "or check the dataset's completions")


def check_first_loss(loss: float, step: int) -> None:
    """The first logged loss: exactly 0 means no token carried loss, NaN that nothing can be learned."""
    if loss == 0.0 or math.isnan(loss):
        raise TrainingFailed(
            "learned_nothing", f"the loss is {loss} at the first logged step ({step}): no answer token carries "
            f"a usable loss; {LEARNED_NOTHING_HELP}")


MIN_LOSS_DROP = 0.01  # the loss must end at least 1% below where it started
MIN_STEPS_TO_JUDGE = 8  # logged steps below which the fall of the loss is not judged (warm-up and batch noise)


def check_learned(log_history: list[dict[str, Any]]) -> None:
    """After training: the training loss must end below where it started.

    Both ends are means over a quarter of the logged steps, so that one noisy batch (or the first steps of a
    warm-up, when the learning rate is still near zero) neither fails a run that learns nor passes one that does
    not; runs shorter than MIN_STEPS_TO_JUDGE steps are smoke runs and are not judged.
    """
    losses = [float(h["loss"]) for h in log_history if "loss" in h and isinstance(h["loss"], (int, float))]
    if not losses:
        raise TrainingFailed("learned_nothing", "no training loss was logged: the run trained on nothing; "
                             + LEARNED_NOTHING_HELP)
    if len(losses) < MIN_STEPS_TO_JUDGE:
        return
    quarter = len(losses) // 4
    head, tail = losses[:quarter], losses[-quarter:]
    start, final = sum(head) / len(head), sum(tail) / len(tail)
    if not final < start * (1 - MIN_LOSS_DROP):
        raise TrainingFailed(
            "learned_nothing", f"the training loss did not fall: {start:.4f} over the first {quarter} and "
            f"{final:.4f} over the last {quarter} of {len(losses)} steps; {LEARNED_NOTHING_HELP}")


def _answer_tokens(tokenizer: Any, rows: list[dict[str, str]]) -> tuple[int, int]:
    """(all tokens, answer tokens) of the examples, eos included, no padding."""
    total = answer = 0
    for row in rows:
        prompt = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        completion = len(tokenizer(row["completion"], add_special_tokens=False)["input_ids"]) + 1
        total += prompt + completion
        answer += completion
    return total, answer


class _PaddedCollator:
    """The unpacked baseline: examples padded (to max_length, or the batch's longest), loss on every token."""

    def __init__(self, tokenizer: Any, max_length: int, padding: str = "max_length") -> None:
        self.tokenizer, self.max_length, self.padding = tokenizer, max_length, padding

    def __call__(self, rows: list[dict[str, str]]) -> dict[str, Any]:
        texts = [r["prompt"] + r["completion"] + self.tokenizer.eos_token for r in rows]
        batch = self.tokenizer(texts, padding=self.padding, truncation=True, max_length=self.max_length,
                               return_tensors="pt", add_special_tokens=False)
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        batch["labels"] = labels
        return dict(batch)


def _callback(spec: TrainSpec, reporter: Reporter, history: list[dict[str, float]]):  # noqa: ANN202
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        """Per-step curves to MLflow and the reporter (rank 0); NaN/inf loss stops the run on every rank."""

        started = time.perf_counter()
        first_step: int | None = None
        tokens_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            self.started = time.perf_counter()
            self.first_step = state.global_step
            self.tokens_at_start = int(getattr(state, "num_input_tokens_seen", 0) or 0)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if "loss" in logs and not getattr(self, "checked_first", False):
                self.checked_first = True
                check_first_loss(logs["loss"], state.global_step)
            for key in ("loss", "eval_loss"):
                if key in logs and not math.isfinite(logs[key]):
                    raise TrainingFailed("diverged", f"{key} became {logs[key]} at step {state.global_step}; "
                                         "lower learning_rate or check the data, then rerun")
            if not state.is_world_process_zero or not logs:
                return
            values = {("train/" if not k.startswith("eval_") else "eval/") + k.removeprefix("eval_"): v
                      for k, v in logs.items() if k not in ("epoch", "total_flos")}
            values["train/epoch"] = logs.get("epoch", 0.0)
            history.append({"step": state.global_step, **values})
            reporter.metrics(state.global_step, values)
            if "train/loss" in values and (state.global_step % 5 == 0 or state.global_step == state.max_steps):
                reporter.log(progress_line(state.global_step, state.max_steps, values["train/loss"],
                                           int(getattr(state, "num_input_tokens_seen", 0) or 0) - self.tokens_at_start,
                                           state.global_step - (self.first_step or 0),
                                           time.perf_counter() - self.started))
            if "eval/loss" in values:
                reporter.log(f"step {state.global_step}: validation loss {values['eval/loss']:.4f}")
            if spec.mlflow is not None:
                _mlflow(spec).log_metrics(values, step=state.global_step, run_id=spec.mlflow.run_id)

    return Report()


def progress_line(step: int, max_steps: int, loss: float, tokens: int, steps_done: int, seconds: float) -> str:
    """`step 5/40 · loss 1.2345 · 812 tokens/s · 3m20s left`: what the console shows while training."""
    rate = tokens / seconds if seconds > 0 else 0.0
    left = (max_steps - step) * seconds / steps_done if steps_done > 0 and max_steps > 0 else 0.0
    minutes, secs = divmod(int(left), 60)
    return (f"step {step}/{max_steps} · loss {loss:.4f} · {rate:.0f} tokens/s · "
            f"{f'{minutes}m{secs:02d}s' if minutes else f'{secs}s'} left")


def _model(spec: TrainSpec, cuda: bool):  # noqa: ANN202
    import torch
    from transformers import AutoModelForCausalLM

    config = spec.config
    dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16}[config.dtype]
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.method == "qlora":
        if not cuda:
            raise TrainingFailed("failed", "method=qlora needs a CUDA GPU (bitsandbytes 4-bit); use method=lora here")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True)
    from slm_pipeline.core.model_loads import exclusive

    with exclusive():
        model = AutoModelForCausalLM.from_pretrained(spec.base_folder, **kwargs)
    peft_config = None
    if config.method in ("lora", "qlora"):
        from peft import LoraConfig

        targets = config.target_modules if config.target_modules == "all-linear" else config.target_modules.split(",")
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=targets, task_type="CAUSAL_LM")
    return model, peft_config


def _loss_curve_png(history: list[dict[str, float]], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_axis = plt.subplots(figsize=(7, 4), dpi=100)
    train = [(h["step"], h["train/loss"]) for h in history if "train/loss" in h]
    evals = [(h["step"], h["eval/loss"]) for h in history if "eval/loss" in h]
    lr = [(h["step"], h["train/learning_rate"]) for h in history if "train/learning_rate" in h]
    if train:
        loss_axis.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        loss_axis.plot(*zip(*evals), "o-", label="validation loss", color="tab:orange")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss (answer tokens)")
    loss_axis.legend(loc="upper right")
    if lr:
        lr_axis = loss_axis.twinx()
        lr_axis.plot(*zip(*lr), color="tab:gray", alpha=0.5, linestyle="--")
        lr_axis.set_ylabel("learning rate", color="tab:gray")
    loss_axis.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def peak_memory_mb() -> float:
    """Peak resident memory of this process (CPU), or peak allocated GPU memory when on CUDA."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Prepared:
    trainer: Any
    tokenizer: Any
    data: pl.DataFrame
    train_rows: list[dict[str, str]]
    eval_rows: list[dict[str, str]]
    resume: str | None
    peft: bool
    history: list[dict[str, float]] = field(default_factory=list)
    fitted: Fitted | None = None


def build_trainer(spec: TrainSpec, reporter: Reporter | None = None) -> Prepared:
    """The configured trainer (TRL SFTTrainer, or transformers' Trainer for the padded baseline), ready to run."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    reporter = reporter or PrintReporter()
    config, cuda = spec.config, torch.cuda.is_available()
    set_seed(config.seed)
    checkpoints = Path(spec.output_dir) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(spec.base_folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = pl.read_parquet(spec.dataset)
    fitted = _fit(data.filter(pl.col("split") == "train"), tokenizer, config.max_length_budget, config.max_length)
    max_length, train_rows = fitted.stats.max_length, fitted.rows
    eval_rows = _fit(data.filter(pl.col("split") == "validation"), tokenizer, max_length, max_length).rows
    if rank() == 0:
        reporter.log(f"sequence length: {fitted.stats.summary()}")
    if not train_rows:
        why = (f"; {', '.join(f'{n} {r}' for r, n in sorted(fitted.stats.dropped.items()))} of "
               f"{fitted.stats.examples}" if fitted.stats.dropped else "")
        raise TrainingFailed("learned_nothing", f"{spec.dataset} has no training example with an answer that "
                             f"fits{why or ' (the train split is empty)'}: nothing to learn; "
                             "check the cluster's answers (task_datasets) or raise max_length_budget")

    resume = get_last_checkpoint(str(checkpoints)) if any(checkpoints.iterdir()) else None
    if resume and rank() == 0:
        reporter.log(f"resuming from {resume}")
    model, peft_config = _model(spec, cuda)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    history: list[dict[str, float]] = []
    common: dict[str, Any] = dict(
        output_dir=str(checkpoints), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        logging_steps=1, eval_strategy="steps" if eval_rows else "no", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        seed=config.seed, data_seed=config.seed, report_to=[], use_cpu=not cuda,
        bf16=cuda and config.dtype != "float32", deepspeed=config.deepspeed_config(),
        disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,  # the Report callback prints progress
        include_num_input_tokens_seen="non_padding",
    )
    callbacks = [_callback(spec, reporter, history)]
    train_set = Dataset.from_list(train_rows)
    eval_set = Dataset.from_list(eval_rows) if eval_rows else None
    if config.trainer == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, max_length=max_length, packing=config.packing,
                         packing_strategy="bfd", completion_only_loss=config.completion_only_loss)
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                             processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    else:
        from transformers import Trainer, TrainingArguments

        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=train_set,
                          eval_dataset=eval_set, data_collator=_PaddedCollator(tokenizer, max_length, config.padding),
                          callbacks=callbacks)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # raw log dicts; our own lines say step, loss, tokens/s
        trainer.remove_callback(noisy)
    if config.trainer == "sft":  # the padded baseline's loss is on every token; its collator stays as it is
        trainer.data_collator = AnswerTokenGuard(trainer.data_collator)
    return Prepared(trainer, tokenizer, data, train_rows, eval_rows, resume, peft_config is not None, history,
                    fitted)


def train(spec: TrainSpec, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the spec; rank 0 returns the report (also written to output_dir/report.json)."""
    import torch

    reporter = reporter or PrintReporter()
    prepared = build_trainer(spec, reporter)
    trainer, tokenizer, resume, history = prepared.trainer, prepared.tokenizer, prepared.resume, prepared.history
    config, main, output = spec.config, rank() == 0, Path(spec.output_dir)
    train_rows, eval_rows, data = prepared.train_rows, prepared.eval_rows, prepared.data
    tokens, answer_tokens = _answer_tokens(tokenizer, train_rows)
    if main and spec.mlflow is not None:
        _log_params(spec, {"train_examples": len(train_rows), "validation_examples": len(eval_rows),
                           "train_tokens": tokens, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                           "fit.max_length": prepared.fitted.stats.max_length})
        _mlflow(spec).log_metrics(prepared.fitted.stats.metrics(), run_id=spec.mlflow.run_id)
    seen_before = 0
    if resume:
        seen_before = json.loads((Path(resume) / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    started = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError as exc:
        raise TrainingFailed("out_of_memory", f"out of memory: {exc}. Lower batch_size or max_length, enable "
                             "gradient_checkpointing, or use method=qlora on a GPU") from exc
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
            raise TrainingFailed("out_of_memory", f"out of memory: {exc}. Lower batch_size or max_length") from exc
        raise
    seconds = time.perf_counter() - started
    check_learned(trainer.state.log_history)  # before anything is saved or registered
    adapter = output / ("adapter" if prepared.peft else "model")
    trainer.save_model(str(adapter))  # gathers ZeRO-3 shards on every rank; writes on rank 0
    if not main:
        return {}
    tokenizer.save_pretrained(adapter)
    tokens_seen = int(trainer.state.num_input_tokens_seen) - int(seen_before)  # non-padding, all ranks
    report: dict[str, Any] = {
        "base_model": spec.base_model, "adapter": str(adapter), "method": config.method,
        "train_examples": len(train_rows), "validation_examples": len(eval_rows),
        "train_tokens": tokens, "answer_tokens": answer_tokens, "global_step": result.global_step,
        "resumed_from": resume, "train_seconds": seconds,
        "tokens_seen": tokens_seen, "tokens_per_second": tokens_seen / seconds if seconds else 0.0,
        "final_train_loss": next((h["train/loss"] for h in reversed(history) if "train/loss" in h), None),
        "first_train_loss": next((h["train/loss"] for h in history if "train/loss" in h), None),
        "final_eval_loss": next((h["eval/loss"] for h in reversed(history) if "eval/loss" in h), None),
        "peak_memory_mb": peak_memory_mb(), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "fitting": prepared.fitted.stats.as_dict(),
    }
    if spec.evaluate_test:
        test = data.filter(pl.col("split") == "test")
        from slm_pipeline.core.models.loading import load_model

        reporter.log(f"evaluating on {test.height} test examples")
        # Reload from what was saved rather than reuse trainer.model: under DeepSpeed (ZeRO-3) that one is
        # sharded across ranks, and the saved adapter is what S6 will serve.
        tuned, tuned_tokenizer = (load_model(Path(spec.base_folder), adapter=adapter) if prepared.peft
                                  else load_model(adapter))
        evaluation = evaluate(tuned, tuned_tokenizer, test)
        report.update(evaluation.metrics("test_"))
        report["test_failures"] = evaluation.failures
    png = _loss_curve_png(history, f"{spec.base_model} · {output.name}")
    (output / "loss_curve.png").write_bytes(png)
    (output / "history.json").write_text(json.dumps(history))
    (output / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if spec.mlflow is not None:
        _log_to_mlflow(spec, report, adapter, output)
    reporter.log(f"done: {result.global_step} steps in {seconds:.0f}s, "
                 f"{report['tokens_per_second']:.0f} tokens/s, final loss {report['final_train_loss']}")
    return report


def _log_params(spec: TrainSpec, extra: dict[str, Any]) -> None:
    """Hyperparameters and data sizes, at the start (so a killed run still shows what it was)."""
    assert spec.mlflow is not None
    mlflow = _mlflow(spec)
    params = {f"train.{k}": v for k, v in spec.config.model_dump().items()}
    params.update({"base_model": spec.base_model, **extra})
    existing = mlflow.MlflowClient().get_run(spec.mlflow.run_id).data.params
    mlflow.log_params({k: str(v)[:500] for k, v in params.items() if k not in existing}, run_id=spec.mlflow.run_id)


def _log_to_mlflow(spec: TrainSpec, report: dict[str, Any], adapter: Path, output: Path) -> None:
    """Final metrics, the adapter and plots, and the registered model version."""
    assert spec.mlflow is not None
    mlflow = _mlflow(spec)
    from mlflow import MlflowClient

    client, run_id = MlflowClient(), spec.mlflow.run_id
    final = {k: float(v) for k, v in report.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("world_size",)}
    mlflow.log_metrics(final, run_id=run_id)
    client.log_artifacts(run_id, str(adapter), artifact_path=adapter.name)
    for name in ("loss_curve.png", "report.json", "history.json"):
        client.log_artifact(run_id, str(output / name))
    if spec.mlflow.registered_model:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(spec.mlflow.registered_model,
                                           tags={k: v for k, v in spec.mlflow.model_tags.items() if k != "run"})
        except MlflowException:
            pass  # already registered
        artifact_uri = client.get_run(run_id).info.artifact_uri
        version = client.create_model_version(spec.mlflow.registered_model, f"{artifact_uri}/{adapter.name}",
                                              run_id=run_id, tags=spec.mlflow.model_tags)
        report["registered_model"] = spec.mlflow.registered_model
        report["model_version"] = version.version
        (output / "report.json").write_text(json.dumps(report, indent=2, default=str))
