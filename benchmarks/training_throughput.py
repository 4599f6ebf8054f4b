"""S5 training throughput: packing + answer-only loss against the naive padded, unpacked baseline.

The same task dataset (demo traffic, one tool-calling task), the same model (the embedded
SmolLM2-135M-Instruct with LoRA r=16 on all linear layers), the same batch size and max_length,
run side by side in this process for the same number of optimizer steps:

  packed       TRL SFTTrainer, BFD packing (padding-free), loss on answer tokens only (the default);
  padded       transformers Trainer, every example padded to max_length, loss on every token (naive);
  longest      transformers Trainer, padded to the batch's longest example (a common middle ground).

Useful tokens/s counts real (non-padding) tokens trained on per second of training; the ratio
against the naive baseline is the figure of merit (target, issue 5: >= 1.5x).

    python benchmarks/training_throughput.py              # 4 steps each, batch 4 x 512 tokens
    python benchmarks/training_throughput.py --steps 8 --model tiny   # a 2-layer model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import polars as pl

from slm_pipeline.core.demo.traffic import generate
from slm_pipeline.core.models.catalogue import availability, load_catalogue
from slm_pipeline.core.models.loading import weights_folder
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import build_task_dataset
from slm_pipeline.core.train.config import TrainConfig, TrainSpec
from slm_pipeline.core.train.run import train

RUNS = {
    "packed": dict(trainer="sft", packing=True, completion_only_loss=True),
    "padded": dict(trainer="hf", packing=False, completion_only_loss=False, padding="max_length"),
    "longest": dict(trainer="hf", packing=False, completion_only_loss=False, padding="longest"),
}


def dataset(work: Path, task: str, calls: int) -> Path:
    rows = [{"call_id": c.call_id, "seq": i, "request": json.dumps(c.record["request"]),
             "response": json.dumps(c.record["response"])}
            for i, c in enumerate(generate(calls, seed=11)) if c.task_type == task and c.variant == "ok"]
    path = work / "dataset.parquet"
    build_task_dataset("bench", "c0", task, pl.DataFrame(rows)).examples.write_parquet(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--task", default="support.refund_request")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a catalogue name, or a local folder")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="slm_bench_throughput_"))
    data = dataset(work, args.task, 3000)
    folder = Path(args.model) if Path(args.model).is_dir() else weights_folder(
        availability(load_catalogue().get(args.model)), Settings().model_cache_dir)
    results = {}
    for name, overrides in RUNS.items():
        config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                             eval_steps=10_000, save_steps=10_000, **overrides)
        spec = TrainSpec(base_model=args.model, base_folder=str(folder), dataset=str(data),
                         output_dir=str(work / name), config=config, evaluate_test=False)
        started = time.perf_counter()
        report = train(spec)
        results[name] = {"tokens_seen": report["tokens_seen"], "train_seconds": report["train_seconds"],
                         "tokens_per_second": report["tokens_per_second"], "wall": time.perf_counter() - started}
    base = results["padded"]["tokens_per_second"]
    print(f"\n{args.steps} steps each, batch {args.batch_size} x max_length {args.max_length}, model {args.model}, "
          f"task {args.task}")
    print(f"{'run':<9} {'useful tokens':>13} {'train s':>8} {'useful tok/s':>12} {'vs padded':>9}")
    for name, r in results.items():
        print(f"{name:<9} {r['tokens_seen']:>13,} {r['train_seconds']:>8.1f} {r['tokens_per_second']:>12.1f} "
              f"{r['tokens_per_second'] / base:>8.2f}x")


if __name__ == "__main__":
    main()
