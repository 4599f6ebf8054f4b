"""Fitting a cluster's examples into the training sequence length, so that no example loses its answer.

Before training, every example is rendered in the chat template the model trains with and its
tokens counted (prompt + completion + end-of-sequence). `max_length` comes from the data unless
set: the longest example rounded up to a multiple of 64, capped by `max_length_budget` (memory).
An example that still does not fit has its oldest conversation turns removed (never the system
prompt that holds the task and its tools, never the latest user turn and what follows it, never
the answer); if that is not enough it is dropped with the reason `too_long`. An example whose
answer is empty is dropped with the reason `empty_answer`. Truncation never cuts an answer.

    fitted = fit_examples(examples, tokenizer, budget=2048)
    fitted.rows        # [{"prompt": rendered prompt, "completion": answer}] that fit
    fitted.stats       # examples, tokens p50/p95/max, shortened, dropped by reason, max_length
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from slm_pipeline.core.evaluate import render_prompt  # the one rendering training, evaluation and serving share

MULTIPLE = 64


def count_tokens(tokenizer: Any, prompt: str, completion: str) -> int:
    """Tokens of one training example as the trainer sees it: prompt, answer, end of sequence."""
    return len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]) + 1


def length_from_data(longest: int, budget: int) -> int:
    """The longest example rounded up to a multiple of 64, at most `budget`."""
    return min(budget, max(MULTIPLE, math.ceil(longest / MULTIPLE) * MULTIPLE))


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class FitStats:
    max_length: int
    examples: int  # examples in (before fitting)
    kept: int
    shortened: int  # kept with their oldest turns removed
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> examples
    tokens_p50: int = 0  # of the kept examples, as trained
    tokens_p95: int = 0
    tokens_max: int = 0
    longest_before: int = 0  # the longest example before any shortening

    def as_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "examples": self.examples, "kept": self.kept,
                "shortened": self.shortened, "dropped": dict(self.dropped), "tokens_p50": self.tokens_p50,
                "tokens_p95": self.tokens_p95, "tokens_max": self.tokens_max, "longest_before": self.longest_before}

    def metrics(self, prefix: str = "fit.") -> dict[str, float]:
        """Flat numbers for MLflow and Dagster metadata."""
        values = {f"{prefix}{k}": float(v) for k, v in self.as_dict().items() if k != "dropped"}
        values[f"{prefix}dropped"] = float(sum(self.dropped.values()))
        for reason, count in self.dropped.items():
            values[f"{prefix}dropped_{reason}"] = float(count)
        return values

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        return (f"{self.kept}/{self.examples} examples fit max_length={self.max_length} "
                f"(tokens p50 {self.tokens_p50}, p95 {self.tokens_p95}, max {self.tokens_max}); "
                f"shortened {self.shortened}; dropped: {dropped}")


@dataclass
class Fitted:
    rows: list[dict[str, str]]  # prompt (rendered) and completion, in the input order
    call_ids: list[str]
    stats: FitStats


def _protected_start(messages: list[dict[str, str]]) -> int:
    """Index of the latest user turn (a tool result is not one); it and all after it are kept."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "user" and not str(message.get("content", "")).startswith("Tool result:"):
            return index
    return len(messages)


def _shorten(tokenizer: Any, messages: list[dict[str, str]], completion: str, max_length: int
             ) -> tuple[str, int, bool] | None:
    """(prompt, tokens, shortened) once the example fits, removing the oldest removable turns first; or None."""
    messages = list(messages)
    shortened = False
    while True:
        prompt = render_prompt(tokenizer, messages)
        tokens = count_tokens(tokenizer, prompt, completion)
        if tokens <= max_length:
            return prompt, tokens, shortened
        first = 1 if messages and messages[0].get("role") == "system" else 0
        if first >= _protected_start(messages):
            return None
        del messages[first]
        shortened = True


def fit_examples(examples: list[dict[str, Any]], tokenizer: Any, budget: int = 2048,
                 max_length: int | None = None) -> Fitted:
    """Fit examples ({"messages": list or JSON, "completion": str, optional "call_id"}) into one sequence length.

    `max_length` None: from the data (the longest example, rounded up to 64, capped by `budget`).
    """
    parsed = []
    dropped: Counter[str] = Counter()
    for index, example in enumerate(examples):
        messages = example["messages"]
        messages = json.loads(messages) if isinstance(messages, str) else list(messages)
        call_id = str(example.get("call_id", index))
        completion = example.get("completion") or ""
        if not completion.strip():
            dropped["empty_answer"] += 1
            continue
        prompt = render_prompt(tokenizer, messages)
        parsed.append((call_id, messages, completion, prompt, count_tokens(tokenizer, prompt, completion)))
    longest = max((p[4] for p in parsed), default=0)
    length = max_length if max_length is not None else length_from_data(longest, budget)
    rows, call_ids, tokens, shortened = [], [], [], 0
    for call_id, messages, completion, prompt, count in parsed:
        if count > length:
            fitted = _shorten(tokenizer, messages, completion, length)
            if fitted is None:
                dropped["too_long"] += 1
                continue
            prompt, count, _ = fitted
            shortened += 1
        rows.append({"prompt": prompt, "completion": completion})
        call_ids.append(call_id)
        tokens.append(count)
    stats = FitStats(max_length=length, examples=len(examples), kept=len(rows), shortened=shortened,
                     dropped=dict(dropped), tokens_p50=_percentile(tokens, 0.5) if tokens else 0,
                     tokens_p95=_percentile(tokens, 0.95) if tokens else 0, tokens_max=max(tokens, default=0),
                     longest_before=longest)
    return Fitted(rows, call_ids, stats)
