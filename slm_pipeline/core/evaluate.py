"""Scoring a model on a task dataset split: generate greedily, parse, compare with the teacher.

Used by S4's zero-shot screen, by S5 after training, and by the quality benchmark.
Metrics (fractions of the examples scored):
  valid        the output parsed in the task's shape (tool calls / JSON object / text)
  name_acc     same tool names in the same order (tool-call tasks; the shape otherwise)
  exact_acc    names and arguments (tool calls), the whole object (JSON), the text
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from slm_pipeline.core.toolcalls import parse_answer, score_answer


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text for a model, through its own chat template."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class Evaluation:
    examples: int
    valid: float
    name_acc: float
    exact_acc: float
    seconds_per_example: float
    failures: list[dict[str, str]]  # a few misses: call id, expected, got, why

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}valid": self.valid, f"{prefix}name_acc": self.name_acc,
                f"{prefix}exact_acc": self.exact_acc, f"{prefix}examples": float(self.examples),
                f"{prefix}seconds_per_example": self.seconds_per_example}


def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 8,
             progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Greedy completions, batched with left padding."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                tokens = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
            new = tokens[:, batch["input_ids"].shape[1]:]
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
            if progress:
                progress(len(outputs), len(prompts))
    finally:
        tokenizer.padding_side = side
    return outputs


def complete(model: Any, tokenizer: Any, examples: pl.DataFrame, *, batch_size: int = 8,
             progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The model's answers to `examples` (rows of task_data.DATASET_SCHEMA, at least one), given room for
    1.5x the longest expected answer."""
    prompts = [render_prompt(tokenizer, json.loads(m)) for m in examples["messages"]]
    longest = max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in examples["completion"])
    return generate(model, tokenizer, prompts, max_new_tokens=int(longest * 1.5) + 8, batch_size=batch_size,
                    progress=progress)


def evaluate(model: Any, tokenizer: Any, examples: pl.DataFrame, *, batch_size: int = 8,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Score the model on `examples` (rows of task_data.DATASET_SCHEMA)."""
    if examples.height == 0:
        return Evaluation(0, 0.0, 0.0, 0.0, 0.0, [])
    started = time.perf_counter()
    texts = complete(model, tokenizer, examples, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - started
    valid = names = exact = 0
    failures = []
    for row, text in zip(examples.iter_rows(named=True), texts):
        expected = parse_answer(row["completion"], row["answer_kind"])
        got = parse_answer(text, row["answer_kind"])
        score = score_answer(got, expected)
        valid += score.valid
        names += score.name_match
        exact += score.exact_match
        if not score.exact_match and len(failures) < 5:
            failures.append({"call_id": row["call_id"], "expected": row["completion"][:300], "got": text[:300],
                             "why": got.error or ("wrong tool" if not score.name_match else "wrong arguments")})
    n = examples.height
    return Evaluation(n, valid / n, names / n, exact / n, seconds / n, failures)
