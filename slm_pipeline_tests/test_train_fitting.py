"""S5 fitting: every example's tokens counted in the chat template used, max_length from the data, no answer cut."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from slm_pipeline.core.evaluate import render_prompt
from slm_pipeline.core.train.config import TrainConfig, TrainSpec
from slm_pipeline.core.train.fitting import count_tokens, fit_examples, length_from_data
from slm_pipeline.core.train.run import build_trainer

SYSTEM = {"role": "system", "content": "Task: refund request. Answer with <tool_call> JSON for one of:\n"
          "issue_refund(order_id: string, amount?: number)"}
ANSWER = '<tool_call>\n{"name": "issue_refund", "arguments": {"order_id": "A-1"}}\n</tool_call>'


@pytest.fixture(scope="module")
def tokenizer(tiny_model_folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_folder)


def _example(call_id: str, *turns: tuple[str, str], completion: str = ANSWER) -> dict:
    return {"call_id": call_id, "messages": [SYSTEM, *({"role": r, "content": c} for r, c in turns)],
            "completion": completion}


def test_tokens_are_counted_in_the_chat_template_and_max_length_comes_from_the_data(tokenizer):
    short = _example("short", ("user", "Refund order A-1 please."))
    long = _example("long", ("user", "Refund order A-1. " + "It arrived broken. " * 60))
    fitted = fit_examples([short, long], tokenizer, budget=2048)
    counts = [count_tokens(tokenizer, render_prompt(tokenizer, e["messages"]), ANSWER) for e in (short, long)]
    assert counts[0] == len(tokenizer(fitted.rows[0]["prompt"] + ANSWER, add_special_tokens=False)["input_ids"]) + 1
    assert "<|im_start|>system" in fitted.rows[0]["prompt"]  # rendered through the model's template
    assert fitted.stats.max_length == length_from_data(counts[1], 2048) and fitted.stats.max_length % 64 == 0
    assert counts[1] <= fitted.stats.max_length < counts[1] + 64
    assert fitted.stats.tokens_max == counts[1] and fitted.stats.kept == 2 and fitted.stats.dropped == {}
    assert fit_examples([short, long], tokenizer, budget=128).stats.max_length == 128  # the budget caps it
    assert fit_examples([short], tokenizer, budget=2048, max_length=96).stats.max_length == 96  # set: kept


def test_an_example_too_long_loses_its_oldest_turns_never_the_latest_user_turn_tools_or_answer(tokenizer):
    old_turns = [("user", "Earlier: " + "my previous order was late. " * 30),
                 ("assistant", "Sorry to hear that. " * 20), ("user", "Tool result: " + "{}" * 40)]
    example = _example("c1", *old_turns, ("user", "Refund order A-1 please."))
    latest_only = count_tokens(tokenizer, render_prompt(tokenizer, [SYSTEM, example["messages"][-1]]), ANSWER)
    fitted = fit_examples([example], tokenizer, budget=latest_only + 10)
    assert fitted.stats.shortened == 1 and fitted.stats.kept == 1
    [row] = fitted.rows
    assert row["completion"] == ANSWER
    assert "issue_refund(order_id: string" in row["prompt"] and "Refund order A-1 please." in row["prompt"]
    assert "Earlier:" not in row["prompt"]  # the oldest turn went first
    assert count_tokens(tokenizer, row["prompt"], ANSWER) <= fitted.stats.max_length


def test_examples_that_cannot_fit_or_have_no_answer_are_dropped_with_a_reason_and_counts_reconcile(tokenizer):
    examples = [_example("ok", ("user", "Refund order A-1.")),
                _example("huge", ("user", "Refund. " + "Details follow. " * 200)),
                _example("empty", ("user", "Refund order A-2."), completion="  "),
                {"call_id": "json", "messages": json.dumps([SYSTEM, {"role": "user", "content": "Refund A-3"}]),
                 "completion": ANSWER}]
    fitted = fit_examples(examples, tokenizer, budget=256)
    assert fitted.call_ids == ["ok", "json"]
    assert fitted.stats.dropped == {"too_long": 1, "empty_answer": 1}
    assert fitted.stats.examples == fitted.stats.kept + sum(fitted.stats.dropped.values()) == 4
    metrics = fitted.stats.metrics()
    assert metrics["fit.dropped"] == 2 and metrics["fit.dropped_too_long"] == 1 and metrics["fit.max_length"] == 256
    assert "2/4 examples fit max_length=256" in fitted.stats.summary()


def test_the_trainer_gets_every_answer_whole_at_the_length_taken_from_the_data(
        tmp_path: Path, tiny_model_folder: Path, tokenizer, refund_dataset: Path):
    data = pl.read_parquet(refund_dataset)
    long_prompt = json.loads(data["messages"][0])
    long_prompt[-1]["content"] = "Please help. " * 150 + long_prompt[-1]["content"]
    data = data.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(json.dumps(long_prompt)))
                             .otherwise(pl.col("messages")).alias("messages"))
    path = tmp_path / "data.parquet"
    data.write_parquet(path)
    spec = TrainSpec(base_model="tiny-llama", base_folder=str(tiny_model_folder), dataset=str(path),
                     output_dir=str(tmp_path / "run"), evaluate_test=False,
                     config=TrainConfig(max_steps=1, batch_size=2, packing=False))
    assert spec.config.max_length is None  # the default: from the data
    prepared = build_trainer(spec)
    max_length = prepared.fitted.stats.max_length
    assert prepared.trainer.args.max_length == max_length > 512  # the old fixed default would have cut it
    assert prepared.fitted.stats.kept == data.filter(pl.col("split") == "train").height
    for row, example in zip(prepared.trainer.train_dataset, prepared.train_rows):
        answer = len(tokenizer(example["completion"], add_special_tokens=False)["input_ids"]) + 1
        assert len(row["input_ids"]) <= max_length
        assert sum(1 for label in row["labels"] if label != -100) >= answer - 1  # the whole answer carries loss
