from __future__ import annotations

import json

import pytest

from slm_pipeline.core.refine.metrics import score_call, summarise, token_f1, tool_schemas

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"},
                                     "include_items": {"type": "boolean"}},
    "required": ["order_id"], "additionalProperties": False}}}]
SCHEMAS = tool_schemas(TOOLS)
TEACHER = '<tool_call>{"name": "lookup_order", "arguments": {"order_id": "ORD-12", "include_items": true}}</tool_call>'


def test_arguments_compare_as_parsed_json_with_key_order_ignored():
    reordered = '<tool_call>{"arguments": {"include_items": true, "order_id": "ORD-12"}, "name": "lookup_order"}</tool_call>'
    score = score_call("c1", reordered, TEACHER, "tool_call", SCHEMAS)
    assert score.agreement and score.exact_match and score.schema_valid and score.error is None


@pytest.mark.parametrize(("output", "name_match", "schema_valid", "why"), [
    ('<tool_call>{"name": "lookup_order", "arguments": {"order_id": "ORD-13", "include_items": true}}</tool_call>',
     True, True, "wrong arguments"),
    ('<tool_call>{"name": "lookup_order", "arguments": {"order_id": 12}}</tool_call>',
     True, False, "wrong arguments (lookup_order.order_id: must be of type string)"),
    ('<tool_call>{"name": "cancel_order", "arguments": {"order_id": "ORD-12"}}</tool_call>',
     False, False, "wrong tool (cancel_order is not one of the request's tools)"),
    ("Sure! Your order ORD-12 is on its way.", False, False, "no <tool_call> block in the output"),
])
def test_each_miss_is_scored_and_explained(output, name_match, schema_valid, why):
    score = score_call("c1", output, TEACHER, "tool_call", SCHEMAS)
    assert not score.agreement and score.name_match is name_match and score.schema_valid is schema_valid
    assert score.error == why


def test_schema_validity_is_its_own_metric_even_when_the_answer_differs():
    extra = '<tool_call>{"name": "lookup_order", "arguments": {"order_id": "ORD-12", "verbose": 1}}</tool_call>'
    score = score_call("c1", extra, TEACHER, "tool_call", SCHEMAS)
    assert score.name_match and not score.exact_match and score.schema_valid is False
    assert "lookup_order.arguments: has a property its schema does not allow" in score.error


def test_schema_reasons_never_quote_the_argument_values():
    from slm_pipeline.core.refine.metrics import schema_errors
    from slm_pipeline.core.toolcalls import parse_answer

    secret = "ada.lovelace@example.org"
    for arguments in ({"order_id": secret}, {"order_id": 12, "note": secret}, {"order_id": [secret]}):
        answer = parse_answer(f'<tool_call>{{"name": "lookup_order", "arguments": {json.dumps(arguments)}}}</tool_call>')
        problems = schema_errors(answer, SCHEMAS)
        assert problems and not any(secret in p for p in problems), problems


def test_json_and_text_answers():
    json_score = score_call("c1", '{"b": 2.0, "a": [1]}', '{"a": [1], "b": 2}', "json", {})
    assert json_score.agreement and json_score.valid
    broken = score_call("c2", '{"a": [1', '{"a": [1]}', "json", {})
    assert not broken.valid and not broken.agreement and broken.error.startswith("the output is not JSON")
    close = score_call("c3", "Your refund was issued today.", "Your refund was issued today!", "text", {})
    assert close.agreement and close.token_f1 == 1.0
    far = score_call("c4", "No idea.", "Your refund was issued today.", "text", {})
    assert not far.agreement and far.error == "different text"


def test_token_f1():
    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("the cat", "the cat sat down") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("", "") == 1.0


def test_summary_names_the_issue_metrics_and_measures_speed():
    scores = [score_call(f"c{i}", TEACHER if i < 3 else "nothing", TEACHER, "tool_call", SCHEMAS,
                         latency_ms=100.0 * (i + 1), output_tokens=20) for i in range(4)]
    metrics = summarise(scores, "tool_call")
    assert metrics["function_name_and_args_accuracy"] == metrics["agreement"] == 0.75
    assert metrics["function_name_accuracy"] == 0.75 and metrics["schema_valid_rate"] == 0.75
    assert metrics["agreements"] == 3 and metrics["examples"] == 4
    assert metrics["latency_ms_p50"] == 250.0 and metrics["tokens_per_s"] == pytest.approx(80 / 1.0)
    text = summarise([score_call("t", "a b", "a b c", "text", {})], "text")
    assert set(text) >= {"exact_match", "token_f1", "embedding_similarity"}


def test_the_llm_judge_is_asked_through_an_openai_compatible_endpoint(fake_upstream: str):
    from slm_pipeline.core.refine.judge import JudgeConfig, judge

    config = JudgeConfig(url=fake_upstream, timeout_s=10)
    assert judge(config, "Where is ORD-12?", TEACHER, TEACHER.replace(", ", ",  ")) is True
    assert judge(config, "Where is ORD-12?", TEACHER, "It is on its way.") is False
    assert judge(JudgeConfig(url="http://127.0.0.1:9/v1", timeout_s=2), "q", "a", "b") is None  # unreachable


def test_judge_verdicts_are_summed_up_over_the_judged_calls_only():
    from dataclasses import replace

    scores = [replace(score_call(f"c{i}", "x", TEACHER, "tool_call", SCHEMAS), judged=v)
              for i, v in enumerate([True, False, True, None])]
    assert summarise(scores, "tool_call")["judge_agreement"] == pytest.approx(2 / 3)
    assert "judge_agreement" not in summarise(scores[3:], "tool_call")
