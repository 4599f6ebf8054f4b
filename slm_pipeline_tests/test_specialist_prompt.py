"""The specialist's prompt: the dataset builder and the SLM server show a request to the SLM as the same tokens."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from slm_pipeline.core.demo.traffic import generate
from slm_pipeline.core.evaluate import render_prompt
from slm_pipeline.core.refine.routing import Route
from slm_pipeline.core.specialist_prompt import SpecialistPrompt, first_sentence, tool_line
from slm_pipeline.core.task_data import DatasetConfig, build_task_dataset
from slm_pipeline.serving.adapters import ServedAdapter


@pytest.fixture(scope="module")
def tokenizer(tiny_model_folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_folder)


@pytest.fixture(scope="module")
def refund_calls() -> pl.DataFrame:
    """Gateway records of the demo's refund requests (with history and tool results among them), as S2 keeps them."""
    rows = [{"call_id": f"c{i}", "seq": i, "request": json.dumps(call.record["request"]),
             "response": json.dumps(call.record["response"])}
            for i, call in enumerate(generate(1500, seed=3))
            if call.task_type == "support.refund_request" and call.variant == "ok"]
    return pl.DataFrame(rows)


def _served(dataset, form: str) -> ServedAdapter:
    """The adapter as the SLM server builds it from the cluster's route (serving/adapters.py `_fetch`)."""
    route = Route("support-bot", "c1", "refund request", "slm", "champion", "slm-support-bot-c1", "1",
                  task_prompt=dataset.task_prompt, prompt_form=form, prompt_tools=dataset.prompt_tools)
    return ServedAdapter("slm-support-bot-c1", "a1", "slm-support-bot-c1", "1", route.task_prompt, Path("."),
                         route.agent_id, route.cluster_id, 0, "champion", route.prompt_form, tuple(route.prompt_tools))


@pytest.mark.parametrize("form", ["compact", "full"])
def test_a_gateway_request_becomes_the_same_tokens_in_training_and_in_serving(form, tokenizer, refund_calls):
    dataset = build_task_dataset("support-bot", "c1", "refund request", refund_calls,
                                 DatasetConfig(prompt_form=form, min_examples=1))
    assert dataset.prompt_form == form and dataset.examples.height > 20
    adapter = _served(dataset, form)
    with_history = 0
    for call_id, messages in dataset.examples.select("call_id", "messages").iter_rows():
        request = json.loads(refund_calls.filter(pl.col("call_id") == call_id)["request"][0])
        trained = tokenizer(render_prompt(tokenizer, json.loads(messages)), add_special_tokens=False)["input_ids"]
        served = tokenizer(render_prompt(tokenizer, adapter.prompt.messages(request)),
                           add_special_tokens=False)["input_ids"]
        assert trained == served, call_id
        with_history += any(m.get("role") == "tool" for m in request["messages"])
    assert with_history > 0  # tool results and earlier turns are among the requests compared
    if form == "full":
        first = json.loads(dataset.examples["messages"][0])[0]["content"]
        assert '"parameters"' in first  # the tools' schemas as sent
    else:
        system = json.loads(dataset.examples["messages"][0])[0]["content"]
        assert system.startswith(dataset.task_prompt) and "issue_refund(order_id: string" in system
        assert dataset.prompt_tools == ["issue_refund"] and '"parameters"' not in system


def test_the_compact_form_is_shorter_and_keeps_the_tools_and_the_conversation(tokenizer, refund_calls):
    request = json.loads(refund_calls["request"][0])
    tools = request["tools"]
    compact = SpecialistPrompt("compact", "Task: refund request. Answer with <tool_call> JSON for one of:\n"
                               + "\n".join(tool_line(t) for t in tools))
    full = SpecialistPrompt("full")
    compact_tokens = len(tokenizer(render_prompt(tokenizer, compact.messages(request)))["input_ids"])
    full_tokens = len(tokenizer(render_prompt(tokenizer, full.messages(request)))["input_ids"])
    assert compact_tokens < full_tokens
    assert compact.messages(request)[1:] == full.messages(request)[1:]  # the same conversation
    assert all(t["function"]["name"] + "(" in compact.messages(request)[0]["content"] for t in tools)
    assert first_sentence("Looks up an order. Returns its status, e.g. shipped.") == "Looks up an order."
    other = {"type": "function", "function": {"name": "find_parcel", "description": "Find a parcel. By id.",
                                              "parameters": {"properties": {"order_id": {"type": "string"}}}}}
    offered = {**request, "tools": [*tools, other]}
    listed = SpecialistPrompt("compact", "Task: x. Answer with <tool_call> JSON for one of:", ("find_parcel",))
    assert listed.system(offered).splitlines()[1:] == ["find_parcel(order_id?: string) - Find a parcel."]
    assert len(listed.system(request).splitlines()) == 1 + len(tools)  # none of its tools offered: all offered
    with pytest.raises(ValueError, match="not one of compact, full"):
        SpecialistPrompt("short")  # type: ignore[arg-type]


def test_the_compact_signature_shows_the_defaults_the_teacher_fills_in():
    """BFCL's teacher fills `units` with 'cm' because the description says so; a signature without it hides why."""
    tool = {"type": "function", "function": {"name": "circumference", "description": "Circumference of a circle.",
                                             "parameters": {"type": "object", "required": ["radius"], "properties": {
                                                 "radius": {"type": "integer", "description": "Default is 1."},
                                                 "units": {"type": "string", "description": "Units. Default is 'cm'."},
                                                 "exact": {"type": "boolean", "default": False},
                                                 "near": {"type": "string",
                                                          "description": "Defaults to the user's location."},
                                                 "limit": {"type": "integer", "description": "Defaults to 10"}}}}}
    assert tool_line(tool) == ("circumference(radius: integer, units?: string = cm, exact?: boolean = false, "
                               "near?: string, limit?: integer = 10) - Circumference of a circle.")
