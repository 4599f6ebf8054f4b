"""S5 on public real traffic (BFCL, non-live): fine-tuned vs zero-shot, and training speed by prompt form and packing.

The public function-calling questions (benchmarks/bfcl.py, issue 17) are grouped by BFCL category
(each category stands in for a task cluster here: the S3 clustering is not part of this
measurement); each category with at least --min-examples questions gets a task dataset (capped at
--max-examples) in the given prompt form, and, side by side on its held-out test split:

  zero-shot   the embedded SmolLM2-135M-Instruct as shipped;
  fine-tuned  LoRA with the default TrainConfig (max_length from the data, packing, answer-only loss)
              for --epochs, run as the training process the `finetuned_slm` asset launches.

Printed per category: function-name and name+arguments accuracy of both, training wall time and
tokens/s, and the size-weighted totals (target: >= 0.80 name+arguments on the trained categories).
Name+arguments is scored two ways: `exact`, equal to the teacher's answer (BFCL's first acceptable
value of each argument; what S6's promotion rule compares), and `bfcl`, accepted by BFCL's own
rules (any acceptable value, optional arguments left out, bfcl.acceptable). The model outputs are
saved beside the adapters (outputs-*.json) for a later look.
With --speed, the largest category is also trained for --speed-steps steps four ways (full vs
compact prompt, packing on vs off), tokens/s and wall time side by side, compact+packing = 1.00.

    python benchmarks/public_finetune.py --categories simple_python --max-examples 200 --epochs 1
    python benchmarks/public_finetune.py --speed-only --speed-steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))

from slm_pipeline.core.evaluate import complete  # noqa: E402
from slm_pipeline.core.models.catalogue import availability, load_catalogue  # noqa: E402
from slm_pipeline.core.models.loading import ModelUnavailableError, load_model, weights_folder  # noqa: E402
from slm_pipeline.core.settings import Settings  # noqa: E402
from slm_pipeline.core.task_data import DatasetConfig, build_task_dataset  # noqa: E402
from slm_pipeline.core.train.config import TrainConfig, TrainSpec  # noqa: E402
from slm_pipeline.core.toolcalls import parse_answer, score_answer  # noqa: E402
from slm_pipeline.core.train.launch import training_command  # noqa: E402


def category_calls(categories: list[str] | None) -> dict[str, pl.DataFrame]:
    from bfcl import CATEGORIES, bfcl_records  # benchmarks/bfcl.py (issue 17)

    rows: dict[str, list[dict]] = defaultdict(list)
    for index, record in enumerate(bfcl_records(categories or [c for c in CATEGORIES if c != "irrelevance"])):
        rows[record["workload_id"]].append({"call_id": record["call_id"], "seq": index,
                                            "request": json.dumps(record["request"]),
                                            "response": json.dumps(record["response"])})
    return {k: pl.DataFrame(v) for k, v in rows.items()}


def base_weights(name: str) -> Path:
    """The weights folder of catalogue model `name`, or a message that says how to make it available."""
    try:
        return weights_folder(availability(load_catalogue().get(name)), Settings().model_cache_dir)
    except KeyError as exc:
        raise SystemExit(exc.args[0]) from None
    except ModelUnavailableError as exc:  # its message says how to make the weights available
        raise SystemExit(str(exc)) from None


def train(folder: Path, dataset: pl.DataFrame, out: Path, config: TrainConfig, evaluate_test: bool,
          base_model: str = "smollm2-135m-instruct") -> tuple[dict, float]:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "dataset.parquet"
    dataset.write_parquet(data)
    spec = TrainSpec(base_model=base_model, base_folder=str(folder), dataset=str(data),
                     output_dir=str(out), config=config, evaluate_test=evaluate_test)
    (out / "spec.json").write_text(spec.model_dump_json())
    started = time.perf_counter()
    done = subprocess.run(training_command(out / "spec.json"), capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")
    return json.loads((out / "report.json").read_text()), wall


def score(model, tokenizer, test: pl.DataFrame, truth: dict[str, list[dict]], saved: Path) -> dict[str, float]:
    """Name, exact (the teacher's answer) and BFCL-acceptable name+arguments accuracy on `test`; the outputs
    are written to `saved`."""
    from bfcl import acceptable

    started = time.perf_counter()
    texts = complete(model, tokenizer, test)  # as S5's evaluation generates, so the `exact` column is its figure
    seconds = time.perf_counter() - started
    names = exact = accepted = 0
    outputs = []
    for row, text in zip(test.iter_rows(named=True), texts):
        got = parse_answer(text, row["answer_kind"])
        verdict = score_answer(got, parse_answer(row["completion"], row["answer_kind"]))
        expected = truth.get(row["call_id"])  # none: an irrelevance question, answered right by calling nothing
        ok = (acceptable([(c.name, c.arguments) for c in got.tool_calls], expected) if expected
              else got.kind == "text")
        names, exact, accepted = names + verdict.name_match, exact + verdict.exact_match, accepted + ok
        outputs.append({"call_id": row["call_id"], "expected": row["completion"], "got": text,
                        "name": verdict.name_match, "exact": verdict.exact_match, "bfcl": ok})
    saved.write_text(json.dumps(outputs, indent=1))
    n = test.height
    return {"name": names / n, "exact": exact / n, "bfcl": accepted / n, "seconds": seconds}


def check_teacher_acceptable(examples: pl.DataFrame, truth: dict[str, list[dict]]) -> None:
    """The `bfcl` score must give the teacher's own answers 1.0, or it measures nothing."""
    from bfcl import acceptable

    for row in examples.iter_rows(named=True):
        if row["call_id"] in truth:
            calls = [(c.name, c.arguments) for c in parse_answer(row["completion"], row["answer_kind"]).tool_calls]
            if not acceptable(calls, truth[row["call_id"]]):
                raise SystemExit(f"{row['call_id']}: the teacher's answer {row['completion']!r} is not acceptable "
                                 "to bfcl.acceptable; fix the loader or the checker before trusting the scores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", nargs="*", default=None, help="BFCL categories (default: non-live, "
                        "irrelevance left out)")
    parser.add_argument("--min-examples", type=int, default=100)
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--form", choices=["compact", "full"], default="compact")
    parser.add_argument("--speed", action="store_true", help="also measure full/compact x packing on/off")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--speed-steps", type=int, default=10)
    parser.add_argument("--train", default="{}", help='TrainConfig fields as JSON, e.g. \'{"method": "full", '
                        '"learning_rate": 5e-5}\' (default: the defaults)')
    parser.add_argument("--no-zero-shot", action="store_true", help="skip the base model's pass (minutes: it "
                        "generates to its token limit)")
    parser.add_argument("--base-model", default="smollm2-135m-instruct", help="catalogue entry to fine-tune "
                        "(its weights must be on this machine: the embedded package, local_path or the HF cache)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slm_bench_public")
    args = parser.parse_args()
    folder = base_weights(args.base_model)
    groups = {k: v for k, v in category_calls(args.categories).items() if v.height >= args.min_examples}
    config = DatasetConfig(max_examples=args.max_examples, test_fraction=args.test_fraction, min_examples=1)
    if not args.speed_only:
        from bfcl import possible_answers

        truth = possible_answers(list(groups))
        extra = json.loads(args.train)
        train_config = TrainConfig(**{"epochs": args.epochs, "eval_steps": 10_000, "save_steps": 10_000, **extra})
        tag = f"{args.base_model}-{args.form}-{args.epochs}" + "".join(f"-{k}={v}" for k, v in extra.items())
        base, tokenizer = load_model(folder)
        print(f"{'category':<20} {'n':>4} {'test':>4} | {'zero name':>9} {'exact':>6} {'bfcl':>6} | "
              f"{'tuned name':>10} {'exact':>6} {'bfcl':>6} | {'train s':>7} {'tok/s':>6}", flush=True)
        rows = []
        for name, calls in sorted(groups.items()):
            dataset = build_task_dataset("bfcl", name, name.replace("_", " "), calls,
                                         replace(config, prompt_form=args.form))
            if dataset.status != "ready":
                raise SystemExit(f"{name}: the task dataset is not ready ({dataset.reason})")
            check_teacher_acceptable(dataset.examples, truth)
            test = dataset.split("test")
            out = args.work / f"{name}-{tag}"
            out.mkdir(parents=True, exist_ok=True)
            zero = ({"name": float("nan"), "exact": float("nan"), "bfcl": float("nan")} if args.no_zero_shot
                    else score(base, tokenizer, test, truth, out / "outputs-zero-shot.json"))
            report, wall = train(folder, dataset.examples, out, train_config, False, args.base_model)
            tuned_model, tuned_tokenizer = (load_model(folder, adapter=Path(report["adapter"]))
                                            if train_config.method != "full" else load_model(Path(report["adapter"])))
            tuned = score(tuned_model, tuned_tokenizer, test, truth, out / "outputs-fine-tuned.json")
            rows.append({"category": name, "examples": dataset.examples.height, "test": test.height,
                         **{f"zero_{k}": v for k, v in zero.items()}, **{f"tuned_{k}": v for k, v in tuned.items()},
                         "train_s": wall, "tokens_per_s": report["tokens_per_second"],
                         "fitting": report.get("fitting"), "first_loss": report.get("first_train_loss"),
                         "final_loss": report.get("final_train_loss")})
            r = rows[-1]
            print(f"{name:<20} {r['examples']:>4} {r['test']:>4} | {r['zero_name']:>9.3f} {r['zero_exact']:>6.3f} "
                  f"{r['zero_bfcl']:>6.3f} | {r['tuned_name']:>10.3f} {r['tuned_exact']:>6.3f} "
                  f"{r['tuned_bfcl']:>6.3f} | {wall:>7.0f} {r['tokens_per_s']:>6.0f}", flush=True)
        tested = sum(r["test"] for r in rows)
        if tested:
            keys = [f"{m}_{k}" for m in ("zero", "tuned") for k in ("name", "exact", "bfcl")]
            w = {k: sum(r[k] * r["test"] for r in rows) / tested for k in keys}
            print(f"{'size-weighted':<20} {'':>4} {tested:>4} | {w['zero_name']:>9.3f} {w['zero_exact']:>6.3f} "
                  f"{w['zero_bfcl']:>6.3f} | {w['tuned_name']:>10.3f} {w['tuned_exact']:>6.3f} "
                  f"{w['tuned_bfcl']:>6.3f}")
        (args.work / f"quality-{tag}.json").write_text(json.dumps(rows, indent=2))
    if args.speed or args.speed_only:
        name, calls = max(groups.items(), key=lambda kv: kv[1].height)
        print(f"\nspeed on {name}: {args.speed_steps} steps each, batch 4, max_length from the data", flush=True)
        results = {}
        for form in ("full", "compact"):
            dataset = build_task_dataset("bfcl", name, name.replace("_", " "), calls,
                                         replace(config, prompt_form=form))
            for packing in (True, False):
                report, wall = train(folder, dataset.examples, args.work / f"speed-{name}-{form}-{packing}",
                                     TrainConfig(max_steps=args.speed_steps, packing=packing, eval_steps=10_000,
                                                 save_steps=10_000), False, args.base_model)
                results[(form, packing)] = (report, wall)
        ref = results[("compact", True)][0]["tokens_per_second"]
        print(f"{'prompt':<8} {'packing':<8} {'max_len':>7} {'tokens':>7} {'tok/s':>7} {'wall s':>7} "
              f"{'vs compact+packing':>18}")
        for (form, packing), (report, wall) in results.items():
            print(f"{form:<8} {str(packing):<8} {report['fitting']['max_length']:>7} {report['tokens_seen']:>7} "
                  f"{report['tokens_per_second']:>7.0f} {wall:>7.0f} {report['tokens_per_second'] / ref:>17.2f}x")


if __name__ == "__main__":
    main()
