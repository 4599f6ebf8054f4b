"""Task datasets: chat format with the task prompt, teacher targets, deterministic leak-free splits."""

from __future__ import annotations

import hashlib
import json

import polars as pl

from slm_pipeline.core.task_data import DatasetConfig, assign_splits, build_task_dataset, tool_signature
from slm_pipeline.core.toolcalls import parse_answer
from slm_pipeline_tests.conftest import cluster_examples


def test_refund_cluster_becomes_a_chat_dataset_with_the_teacher_answers(curated_demo):
    calls = cluster_examples(curated_demo, "support.refund_request")
    dataset = build_task_dataset("support-bot", "c1", "refund request order", calls)
    assert dataset.status == "ready" and dataset.examples.height == calls.height
    assert dataset.task_prompt.startswith("Task: refund request order.") and dataset.prompt_tools == ["issue_refund"]
    row = dataset.examples.row(0, named=True)
    messages = json.loads(row["messages"])
    system = messages[0]["content"]  # the task prompt, then the cluster's tools this request offers
    assert messages[0]["role"] == "system" and system.startswith(dataset.task_prompt)
    assert "issue_refund(order_id: string, amount: number" in system
    assert messages[-1]["role"] == "user" and len(system) < 300  # not the agent's 1,100 characters
    answer = parse_answer(row["completion"], "tool_call")
    request, response = (json.loads(v) for v in calls.filter(pl.col("call_id") == row["call_id"]).row(0)[2:4])
    teacher = json.loads(response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert answer.tool_calls[0].name == "issue_refund" and answer.tool_calls[0].arguments == teacher


def test_splits_are_deterministic_stratified_and_keep_near_duplicates_together(curated_demo):
    calls = cluster_examples(curated_demo, "support.order_status")
    # Add near-duplicates of the first 30 calls (the same user turn, another call id).
    copies = calls.head(30).with_columns(pl.col("call_id") + "-again", pl.col("seq") + 10_000)
    dataset = build_task_dataset("support-bot", "c0", "order status", pl.concat([calls, copies]))
    again = build_task_dataset("support-bot", "c0", "order status", pl.concat([copies, calls]))
    assert dataset.examples.sort("call_id").equals(again.examples.sort("call_id"))
    assert dataset.leaking_groups() == 0
    for call_id in copies["call_id"].head(10):
        pair = dataset.examples.filter(pl.col("call_id").is_in([call_id, call_id.removesuffix("-again")]))
        assert pair["split"].n_unique() == 1
    fractions = dataset.examples["split"].value_counts(normalize=True)
    share = dict(zip(fractions["split"], fractions["proportion"]))
    assert abs(share["test"] - 0.1) < 0.03 and abs(share["validation"] - 0.1) < 0.03


def test_stratification_gives_every_tool_its_share_of_test():
    strata = ["a"] * 100 + ["b"] * 20
    splits = assign_splits(strata, [f"g{i}" for i in range(120)], 0.1, 0.1)
    by_stratum = {s: [sp for st, sp in zip(strata, splits) if st == s] for s in ("a", "b")}
    assert by_stratum["a"].count("test") == 10 and by_stratum["b"].count("test") == 2
    # Adding traffic moves no earlier example between splits except to keep the fractions.
    more = assign_splits(strata + ["a"] * 50, [f"g{i}" for i in range(170)], 0.1, 0.1)
    moved = sum(1 for old, new in zip(splits[:100], more[:100]) if old != new)
    assert moved <= 10


def test_functions_too_rare_to_split_alone_are_pooled_so_a_test_split_remains():
    # A tool suite (or BFCL's simple_python) where almost every call uses its own function: no stratum has the
    # 3 groups a split needs, but the cluster as a whole has 200 distinct requests to hold out from.
    strata = [f"f{i}" for i in range(180)] + ["common"] * 20
    splits = assign_splits(strata, [f"g{i}" for i in range(200)], 0.1, 0.1)
    assert abs(splits.count("test") - 20) <= 1 and abs(splits.count("validation") - 20) <= 1
    common = [sp for st, sp in zip(strata, splits) if st == "common"]
    assert common.count("test") == 2  # a stratum that can be split keeps its own share
    # Only a pool of fewer than 3 groups goes to train whole.
    assert assign_splits(["a", "b"], ["g1", "g2"], 0.1, 0.1) == ["train", "train"]


def test_a_cluster_of_one_call_per_function_gets_a_test_split_and_is_ready():
    def call(i: int) -> dict:
        words = hashlib.sha256(str(i).encode()).hexdigest()
        tool = {"type": "function", "function": {"name": f"tool_{i}", "parameters": {
            "type": "object", "properties": {"x": {"type": "integer"}}}}}
        answer = {"id": "t", "type": "function", "function": {"name": f"tool_{i}", "arguments": json.dumps({"x": i})}}
        return {"call_id": f"c{i}", "seq": i,
                "request": json.dumps({"model": "m", "tools": [tool], "messages": [
                    {"role": "user", "content": f"{words[:8]} {words[8:20]} then {words[20:32]}"}]}),
                "response": json.dumps({"choices": [{"message": {"role": "assistant", "tool_calls": [answer]}}]})}

    calls = pl.DataFrame([call(i) for i in range(100)])
    dataset = build_task_dataset("suite-agent", "c1", "suite", calls, DatasetConfig(min_examples=50))
    assert dataset.status == "ready", dataset.reason
    assert dataset.split("test").height == 10 and dataset.leaking_groups() == 0


def test_small_clusters_stay_on_the_llm_and_say_why(curated_demo):
    calls = cluster_examples(curated_demo, "support.refund_request").head(12)
    dataset = build_task_dataset("support-bot", "c9", "refund", calls, DatasetConfig(min_examples=50))
    assert dataset.status == "stays_on_llm" and "only 12 usable examples, fewer than min_examples=50" in dataset.reason


def test_unreadable_teacher_answers_are_filtered_with_the_reason(curated_demo):
    calls = cluster_examples(curated_demo, "support.refund_request").head(60)
    broken = {"choices": [{"message": {"tool_calls": [{"function": {"name": "x", "arguments": "{oops"}}]}}]}
    calls = calls.with_columns(pl.when(pl.col("seq") == calls["seq"][0]).then(pl.lit(json.dumps(broken)))
                               .otherwise(pl.col("response")).alias("response"))
    dataset = build_task_dataset("support-bot", "c1", "refund", calls)
    assert dataset.filtered == {"teacher_answer_unreadable": 1} and dataset.examples.height == 59


def test_tool_signature_is_short_and_lists_choices():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": ["a"],
            "properties": {"a": {"type": "string"}, "b": {"type": "string", "enum": ["x", "y"]}}}}}
    assert tool_signature(tool) == 'f(a: string, b?: "x"|"y")'
