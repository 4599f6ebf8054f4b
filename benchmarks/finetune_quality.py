"""S5 quality and cost: the embedded SmolLM2-135M fine-tuned on each demo tool-calling cluster.

Demo traffic is imported, curated and clustered as the pipeline does (benchmarks/clustering.py's
helper); every tool-calling cluster with at least --min-examples curated calls gets a task dataset
(capped at --max-examples), and, side by side on its test split:

  zero-shot   the base model as shipped (it does not follow the tool-call format);
  fine-tuned  LoRA with the default TrainConfig (packing, answer-only loss) for --epochs, run as the
              training process the `finetuned_slm` asset launches.

Printed per cluster: function-name accuracy and name+arguments accuracy of both, wall time of the
training process and its peak memory (RSS). Target (issue 5): >= 0.95 name+arguments on every demo
cluster with >= 200 examples.

    python benchmarks/finetune_quality.py                 # 3,000 demo calls, 1 epoch
    python benchmarks/finetune_quality.py --epochs 2 --calls 6000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from clustering import curated_demo  # noqa: E402

from slm_pipeline.core.cluster.pipeline import cluster_calls  # noqa: E402
from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder  # noqa: E402
from slm_pipeline.core.evaluate import evaluate  # noqa: E402
from slm_pipeline.core.models.catalogue import availability, load_catalogue  # noqa: E402
from slm_pipeline.core.models.loading import load_model, weights_folder  # noqa: E402
from slm_pipeline.core.settings import Settings  # noqa: E402
from slm_pipeline.core.task_data import DatasetConfig, build_task_dataset  # noqa: E402
from slm_pipeline.core.train.config import TrainConfig, TrainSpec  # noqa: E402
from slm_pipeline.core.train.launch import training_command  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--min-examples", type=int, default=200)
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--clusters", type=int, default=None, help="only the N largest qualifying clusters")
    parser.add_argument("--skip", type=int, default=0, help="skip the S largest qualifying clusters (measured before)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slm_bench_finetune")
    parser.add_argument("--method", choices=["lora", "full"], default="lora", help="LoRA adapters or all weights")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: TrainConfig's (1e-3, for LoRA); ~5e-5 for --method full")
    parser.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default: TrainConfig's, 16)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    by_agent, _ = curated_demo(args.calls, args.work)
    embedder = SentenceTransformerEmbedder()
    folder = weights_folder(availability(load_catalogue().get("smollm2-135m-instruct")), Settings().model_cache_dir)
    base, tokenizer = load_model(folder)
    jobs = []
    for agent, frame in sorted(by_agent.items()):
        result = cluster_calls(frame, agent, embedder)
        for cluster in result.clusters.iter_rows(named=True):
            if "tool_call" not in cluster["answer_kinds"] or cluster["size"] < args.min_examples:
                continue
            members = result.assignments.filter(pl.col("cluster_id") == cluster["cluster_id"]).select("call_id")
            calls = frame.join(members, on="call_id", how="semi").select("call_id", "seq", "request", "response")
            dataset = build_task_dataset(agent, cluster["cluster_id"], cluster["label"], calls,
                                         DatasetConfig(max_examples=args.max_examples))
            jobs.append((agent, cluster, dataset))
    overrides = {k: v for k, v in (("learning_rate", args.learning_rate), ("lora_r", args.lora_r)) if v is not None}
    jobs.sort(key=lambda j: -j[1]["size"])
    jobs = jobs[args.skip:][:args.clusters]
    print(f"\n{len(jobs)} tool-calling clusters with >= {args.min_examples} curated calls "
          f"(of {args.calls:,} demo records); {args.method}, {args.epochs} epoch(s), "
          f"{'; '.join(f'{k} {v}' for k, v in overrides.items()) or 'default TrainConfig otherwise'}\n")
    header = (f"{'cluster':<32} {'n':>4} {'test':>4} | {'zero-shot name':>14} {'name+args':>9} | "
              f"{'tuned name':>10} {'name+args':>9} | {'train s':>7} {'peak MiB':>8} {'tok/s':>6}")
    print(header)
    rows = []
    for agent, cluster, dataset in jobs:
        name = f"{agent}:{cluster['cluster_id']} {cluster['label'].split()[0]}"[:32]
        test = dataset.split("test")
        zero = evaluate(base, tokenizer, test)
        variant = "".join(f"-{k}{v}" for k, v in overrides.items())
        out = args.work / f"run-{agent}-{cluster['cluster_id']}-{args.epochs}" / f"{args.method}{variant}"
        data = out / "dataset.parquet"
        out.mkdir(parents=True, exist_ok=True)
        dataset.examples.write_parquet(data)
        spec = TrainSpec(base_model="smollm2-135m-instruct", base_folder=str(folder), dataset=str(data),
                         output_dir=str(out), config=TrainConfig(epochs=args.epochs, eval_steps=10_000,
                                                                 method=args.method, **overrides))
        (out / "spec.json").write_text(spec.model_dump_json())
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(training_command(out / "spec.json"), capture_output=True, text=True)
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            print(f"{name}: training failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
            continue
        report = json.loads((out / "report.json").read_text())
        rows.append({"cluster": name, "examples": dataset.examples.height, "test": test.height,
                     "zero_name": zero.name_acc, "zero_exact": zero.exact_acc,
                     "tuned_name": report["test_name_acc"], "tuned_exact": report["test_exact_acc"],
                     "train_s": wall, "peak_mib": peak if peak > before / 1024 else before / 1024,
                     "tokens_per_s": report["tokens_per_second"], "failures": report.get("test_failures", [])})
        r = rows[-1]
        print(f"{name:<32} {r['examples']:>4} {r['test']:>4} | {r['zero_name']:>14.3f} {r['zero_exact']:>9.3f} | "
              f"{r['tuned_name']:>10.3f} {r['tuned_exact']:>9.3f} | {wall:>7.0f} {r['peak_mib']:>8.0f} "
              f"{r['tokens_per_s']:>6.0f}", flush=True)
    (args.work / "results.json").write_text(json.dumps(rows, indent=2))
    misses = [r["cluster"] for r in rows if r["tuned_exact"] < 0.95]
    print(f"\nname+arguments >= 0.95 on {len(rows) - len(misses)} of {len(rows)} clusters"
          + (f"; below: {', '.join(misses)}" if misses else "") + f" (details: {args.work / 'results.json'})")


if __name__ == "__main__":
    main()
