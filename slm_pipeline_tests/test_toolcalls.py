"""The SLM answer format: rendering targets, parsing model output (never raising), scoring."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from slm_pipeline.core.toolcalls import (
    ParsedAnswer,
    ToolCall,
    parse_answer,
    render_answer,
    score_answer,
    teacher_answer,
    to_openai_message,
)


def _response(message: dict) -> dict:
    return {"choices": [{"message": message}]}


def test_teacher_tool_call_renders_and_parses_back():
    answer = teacher_answer(_response({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "issue_refund",
                                                      "arguments": '{"order_id": "ORD-1", "amount": 12.5}'}}]}))
    text = render_answer(answer)
    assert text == '<tool_call>{"name": "issue_refund", "arguments": {"order_id": "ORD-1", "amount": 12.5}}</tool_call>'
    assert parse_answer(text) == answer
    message = to_openai_message(parse_answer(text))
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"order_id": "ORD-1", "amount": 12.5}


def test_json_and_text_answers():
    assert teacher_answer(_response({"content": '{"category": "billing"}'})) == ParsedAnswer("json", value={"category": "billing"})
    assert teacher_answer(_response({"content": "Hi there"})).kind == "text"
    assert parse_answer('{"a": 1}', "json").value == {"a": 1}
    assert parse_answer("[1, 2]", "json").kind == "invalid"


def test_malformed_output_is_invalid_with_the_reason():
    assert parse_answer("I think you should call lookup_order", "tool_call").error == "no <tool_call> block in the output"
    assert "not JSON" in parse_answer('<tool_call>{"name": "x", "arguments": {</tool_call>').error
    assert parse_answer('<tool_call>{"arguments": {}}</tool_call>').error == "tool call 1 has no function name"
    assert "not an object" in parse_answer('<tool_call>{"name": "x", "arguments": [1]}</tool_call>').error
    # An unterminated last block (generation hit max_new_tokens right after the JSON) still parses.
    assert parse_answer('<tool_call>{"name": "x", "arguments": {"a": 1}}').tool_calls == [ToolCall("x", {"a": 1})]


def test_scoring_compares_values_as_a_tool_would():
    reference = ParsedAnswer("tool_call", [ToolCall("refund", {"amount": 12, "id": "A"})])
    same = ParsedAnswer("tool_call", [ToolCall("refund", {"id": " A", "amount": 12.0})])
    other_args = ParsedAnswer("tool_call", [ToolCall("refund", {"id": "B", "amount": 12})])
    other_tool = ParsedAnswer("tool_call", [ToolCall("lookup", {"id": "A"})])
    assert score_answer(same, reference).exact_match
    assert score_answer(other_args, reference).name_match and not score_answer(other_args, reference).exact_match
    assert not score_answer(other_tool, reference).name_match
    assert not score_answer(ParsedAnswer("invalid", error="x"), reference).valid


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('<>/{}[]":,tool_call namergus 0123\\')), max_size=200),
       st.sampled_from([None, "tool_call", "json", "text"]))
def test_parser_never_raises_and_valid_calls_are_well_formed(text: str, expect):
    parsed = parse_answer(text, expect)
    assert parsed.kind in ("tool_call", "json", "text", "invalid")
    if parsed.kind == "invalid":
        assert parsed.error
    for call in parsed.tool_calls:
        assert isinstance(call.name, str) and call.name and isinstance(call.arguments, dict)
        json.dumps(call.arguments)  # what the gateway returns stays serialisable


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20),
                          st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=20),
                                                                         st.booleans(), st.none()), max_size=4)),
                min_size=1, max_size=3))
def test_any_rendered_tool_call_parses_back_exactly(calls):
    answer = ParsedAnswer("tool_call", [ToolCall(name, args) for name, args in calls])
    parsed = parse_answer(render_answer(answer), "tool_call")
    if any("</tool_call>" in name or "</tool_call>" in json.dumps(args) for name, args in calls):
        return  # a value containing the closing tag cannot be delimited; the parser reports it, never crashes
    assert score_answer(parsed, answer).exact_match
