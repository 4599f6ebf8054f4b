"""S5 prompt cost: training tokens per example with the agent's full prompt vs the compact specialist prompt.

For each group of calls (a demo agent's true task type, or a BFCL category), the task dataset is
built twice, `prompt_form: full` (the agent's request as sent: its system prompt and the tools'
JSON schemas) and `compact` (a short task instruction, tool signatures with the first sentence of
each description, the conversation), and every example is counted as the trainer counts it:
prompt + answer + end of sequence, in SmolLM2's chat template (`core/train/fitting.py`). Printed
side by side: examples, mean and p95/max tokens per example, and full/compact.

    python benchmarks/prompt_tokens.py                    # demo traffic (3,000 calls, seed 0)
    python benchmarks/prompt_tokens.py --bfcl             # BFCL non-live categories (benchmarks/bfcl.py)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))

from slm_pipeline.core.models.catalogue import availability, load_catalogue  # noqa: E402
from slm_pipeline.core.models.loading import weights_folder  # noqa: E402
from slm_pipeline.core.settings import Settings  # noqa: E402
from slm_pipeline.core.task_data import DatasetConfig, build_task_dataset  # noqa: E402
from slm_pipeline.core.train.fitting import count_tokens, render_prompt  # noqa: E402


def demo_groups(calls: int, seed: int) -> dict[str, pl.DataFrame]:
    from slm_pipeline.core.demo.traffic import generate

    rows: dict[str, list[dict]] = defaultdict(list)
    for index, call in enumerate(generate(calls, seed)):
        if call.variant != "ok" or "request" not in call.record:
            continue
        rows[f"{call.agent_id}/{call.task_type}"].append({
            "call_id": f"c{index}", "seq": index, "request": json.dumps(call.record["request"]),
            "response": json.dumps(call.record["response"])})
    return {k: pl.DataFrame(v) for k, v in rows.items()}


def bfcl_groups() -> dict[str, pl.DataFrame]:
    from bfcl import bfcl_records  # benchmarks/bfcl.py (issue 17)

    rows: dict[str, list[dict]] = defaultdict(list)
    for index, record in enumerate(bfcl_records()):
        group = record.get("workload_id") or record.get("agent_id") or "bfcl"
        rows[group].append({"call_id": f"b{index}", "seq": index, "request": json.dumps(record["request"]),
                            "response": json.dumps(record["response"])})
    return {k: pl.DataFrame(v) for k, v in rows.items()}


def tokens_per_example(frame: pl.DataFrame, form: str, tokenizer) -> list[int]:  # noqa: ANN001
    dataset = build_task_dataset("bench", "c", "task", frame, DatasetConfig(prompt_form=form, min_examples=1))
    return [count_tokens(tokenizer, render_prompt(tokenizer, json.loads(m)), c)
            for m, c in zip(dataset.examples["messages"], dataset.examples["completion"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bfcl", action="store_true", help="BFCL's non-live categories instead of demo traffic")
    parser.add_argument("--min-examples", type=int, default=20)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    entry = load_catalogue(Settings().catalogue).get("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(weights_folder(availability(entry), Settings().model_cache_dir))
    groups = bfcl_groups() if args.bfcl else demo_groups(args.calls, args.seed)
    print(f"{'group':45} {'examples':>8} {'full mean':>9} {'full p95':>8} {'compact mean':>12} "
          f"{'compact p95':>11} {'full/compact':>12}")
    totals = {"full": [], "compact": []}
    for name, frame in sorted(groups.items()):
        if frame.height < args.min_examples:
            continue
        full, compact = tokens_per_example(frame, "full", tokenizer), tokens_per_example(frame, "compact", tokenizer)
        if not full or not compact:
            continue
        totals["full"] += full
        totals["compact"] += compact
        p95 = lambda v: sorted(v)[int(0.95 * (len(v) - 1))]  # noqa: E731
        print(f"{name:45} {len(full):8d} {statistics.mean(full):9.0f} {p95(full):8d} "
              f"{statistics.mean(compact):12.0f} {p95(compact):11d} "
              f"{statistics.mean(full) / statistics.mean(compact):11.2f}x")
    if totals["full"]:
        full, compact = statistics.mean(totals["full"]), statistics.mean(totals["compact"])
        print(f"{'all (example-weighted)':45} {len(totals['full']):8d} {full:9.0f} {'':8} {compact:12.0f} {'':11} "
              f"{full / compact:11.2f}x")


if __name__ == "__main__":
    main()
