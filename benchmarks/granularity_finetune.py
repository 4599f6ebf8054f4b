"""S3 granularity on the end figures (issue 18): one SLM per tool suite vs one per function, fine-tuned.

On the demo's general assistant (8 tool suites, 5-8 functions each, 10-38 calls per function,
multi-turn), one suite's curated calls are turned into task datasets two ways, as S3 would cluster
them at each granularity (the benchmark groups by the true labels, which the clustering recovers
with ARI 1.000 against suites and 0.987 against functions, see RESULTS.md):

  suite     one cluster: every call of the suite, one dataset, one SLM;
  function  one cluster per function: each its own dataset (its prompt lists only its function).

Printed: how many clusters of each granularity reach the dataset minimum (so could ever train) and
the share of the suite's calls in them; then the suite's SLM is trained (LoRA, the default
TrainConfig, --epochs) and, for the --functions largest functions, a function-level SLM is trained
too, although the pipeline would keep it on the LLM (its dataset is used whatever its status, for the
measurement). Both are scored on the same held-out calls of that function (the suite dataset's
test split decides the split for both), name and name+arguments equal to the teacher's.

    python benchmarks/granularity_finetune.py --epochs 2 --functions 8   # --work keeps finished trainings
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))

from slm_pipeline.core.cluster.pipeline import ClusteringConfig  # noqa: E402
from slm_pipeline.core.demo.assistant import suite_of  # noqa: E402
from slm_pipeline.core.evaluate import evaluate  # noqa: E402
from slm_pipeline.core.models.loading import load_model  # noqa: E402
from slm_pipeline.core.task_data import DatasetConfig, build_task_dataset  # noqa: E402
from slm_pipeline.core.train.config import TrainConfig  # noqa: E402


def trained(folder: Path, examples: pl.DataFrame, out: Path, config: TrainConfig) -> tuple[dict, float]:
    """public_finetune.train, or the report of the same training already in `out` (same data and config)."""
    from public_finetune import train

    done = out / "report.json"
    if done.exists() and pl.read_parquet(out / "dataset.parquet").equals(examples) and json.loads(
            (out / "spec.json").read_text())["config"] == config.model_dump(mode="json"):
        report = json.loads(done.read_text())
        return report, report["train_seconds"]
    return train(folder, examples, out, config, False)


def main() -> None:
    from clustering import curated_demo
    from public_finetune import base_weights

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assistant-calls", type=int, default=1300, help="demo records of the general assistant")
    parser.add_argument("--suite", default=None, help="the suite to train (default: the one with most calls)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--functions", type=int, default=8, help="function-level SLMs to train (largest first)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slm_bench_granularity")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    by_agent, truth = curated_demo(args.assistant_calls, args.work, assistant_only=True)
    frame = by_agent["general-assistant"].with_columns(
        pl.col("call_id").replace_strict(truth, default=None).alias("function"))
    frame = frame.with_columns(pl.col("function").map_elements(suite_of, return_dtype=pl.String).alias("suite"))
    suites = Counter(frame["suite"].to_list())
    suite = args.suite or suites.most_common(1)[0][0]
    calls = frame.filter(pl.col("suite") == suite)
    if calls.height == 0:
        raise SystemExit(f"no curated calls of suite {suite!r}; suites: {', '.join(sorted(suites))}")
    minimum = ClusteringConfig().trainable_min
    config = DatasetConfig()

    suite_data = build_task_dataset("general-assistant", suite, suite, calls, config)
    by_function = {name: build_task_dataset("general-assistant", name, name, group, config)
                   for (name,), group in calls.group_by("function")}
    ready = [n for n, d in by_function.items() if d.status == "ready"]
    sizes = calls["function"].value_counts()["count"]
    print(f"suite {suite!r}: {calls.height} curated calls, {len(by_function)} functions "
          f"({sizes.min()}-{sizes.max()} calls each); dataset minimum {minimum}")
    print(f"{'granularity':<12} {'clusters':>8} {'trainable':>9} {'calls in trainable':>18}")
    print(f"{'suite':<12} {1:>8} {int(suite_data.status == 'ready'):>9} "
          f"{(calls.height if suite_data.status == 'ready' else 0) / calls.height:>18.1%}")
    print(f"{'function':<12} {len(by_function):>8} {len(ready):>9} "
          f"{sum(by_function[n].examples.height for n in ready) / calls.height:>18.1%}", flush=True)
    if suite_data.status != "ready":
        raise SystemExit(f"the suite's dataset is not ready: {suite_data.reason}")

    folder = base_weights("smollm2-135m-instruct")
    train_config = TrainConfig(epochs=args.epochs, eval_steps=10_000, save_steps=10_000)
    report, wall = trained(folder, suite_data.examples, args.work / f"suite-{suite}", train_config)
    suite_model, suite_tokenizer = load_model(folder, adapter=Path(report["adapter"]))
    print(f"suite SLM: {suite_data.split('train').height} training examples, {wall:.0f} s, "
          f"{report['tokens_per_second']:.0f} tokens/s, loss {report['first_train_loss']} -> "
          f"{report['final_train_loss']}", flush=True)
    whole = evaluate(suite_model, suite_tokenizer, suite_data.split("test"))
    print(f"suite SLM on the suite's {whole.examples} test calls: name {whole.name_acc:.3f}, "
          f"name+args {whole.exact_acc:.3f}", flush=True)

    split_of = dict(zip(suite_data.examples["call_id"], suite_data.examples["split"]))
    largest = sorted(by_function, key=lambda n: -by_function[n].examples.height)[:args.functions]
    rows = []
    for name in largest:
        # its own dataset (its prompt lists only its function), trained although under the minimum, split as the
        # suite's so both SLMs are tested on the same calls
        examples = by_function[name].examples.with_columns(pl.col("call_id").replace_strict(split_of).alias("split"))
        test_ids = examples.filter(pl.col("split") == "test")["call_id"]
        report, wall = trained(folder, examples, args.work / f"function-{name}", train_config)
        model, tokenizer = load_model(folder, adapter=Path(report["adapter"]))
        own = evaluate(model, tokenizer, examples.filter(pl.col("split") == "test"))
        shared = evaluate(suite_model, suite_tokenizer,
                          suite_data.examples.filter(pl.col("call_id").is_in(test_ids.implode())))
        rows.append({"function": name, "calls": examples.height,
                     "train": examples.filter(pl.col("split") == "train").height, "test": own.examples,
                     "status": by_function[name].status, "function_name": own.name_acc,
                     "function_exact": own.exact_acc, "suite_name": shared.name_acc, "suite_exact": shared.exact_acc,
                     "function_train_s": wall})
    print(f"\n{'function':<28} {'calls':>5} {'train':>5} {'test':>4} | {'its own SLM name':>16} {'name+args':>9} | "
          f"{'suite SLM name':>14} {'name+args':>9}")
    for r in rows:
        print(f"{r['function']:<28} {r['calls']:>5} {r['train']:>5} {r['test']:>4} | {r['function_name']:>16.3f} "
              f"{r['function_exact']:>9.3f} | {r['suite_name']:>14.3f} {r['suite_exact']:>9.3f}")
    tested = sum(r["test"] for r in rows)
    if tested:
        mean = {k: sum(r[k] * r["test"] for r in rows) / tested
                for k in ("function_name", "function_exact", "suite_name", "suite_exact")}
        print(f"{'size-weighted':<28} {'':>5} {'':>5} {tested:>4} | {mean['function_name']:>16.3f} "
              f"{mean['function_exact']:>9.3f} | {mean['suite_name']:>14.3f} {mean['suite_exact']:>9.3f}")
    (args.work / "granularity.json").write_text(json.dumps(
        {"suite": suite, "calls": calls.height, "function_clusters": len(by_function), "function_trainable": ready,
         "suite_test": whole.metrics(), "functions": rows}, indent=2))


if __name__ == "__main__":
    main()
