"""The trace and log formats S1 reads (core/trace_formats): OTLP decoding, the GenAI conventions' three
generations, OpenInference, Langfuse, LiteLLM, Data Flywheel, and what is skipped or quarantined, and why."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from slm_pipeline.core.store import LogStore
from slm_pipeline.core.trace_formats import otlp
from slm_pipeline.core.trace_formats.calls import (
    Converted,
    Rejected,
    Skipped,
    langfuse_to_record,
    litellm_to_record,
    span_to_record,
)
from slm_pipeline.core.trace_formats.files import detect, import_any
from slm_pipeline.core.trace_formats.spans import flatten, iter_spans, unflatten
from slm_pipeline_tests import otlp_spans as S


def spans_of(document: dict) -> list:
    return list(iter_spans(otlp.from_json_document(orjson.loads(orjson.dumps(document)))))


def one(attributes: dict, **options) -> Converted | Skipped | Rejected:  # noqa: ANN003
    (span,) = spans_of(S.request(S.span(attributes, **options)))
    return span_to_record(span, "support-bot")


def test_protobuf_json_and_gzip_encodings_decode_to_the_same_spans():
    document = S.request(S.span(S.openllmetry()), S.span({"http.method": "GET"}, name="GET /"))
    from_json = otlp.decode_request(orjson.dumps(document), "application/json")
    body = from_json.SerializeToString()
    assert otlp.decode_request(body, "application/x-protobuf") == from_json
    assert otlp.decode_request(gzip.compress(body), "application/x-protobuf; charset=binary", "gzip") == from_json
    spans = list(iter_spans(from_json))
    assert [s.trace_id for s in spans] == [document["resourceSpans"][0]["scopeSpans"][0]["spans"][i]["traceId"]
                                           for i in (0, 1)]  # OTLP/JSON hex ids come back as the same hex
    assert spans[0].service_name == "support-bot" and spans[0].attributes["gen_ai.usage.prompt_tokens"] == 42


@pytest.mark.parametrize(("body", "content_type", "encoding", "error"), [
    (b"\xff\xff\xff\xff", "application/x-protobuf", None, "malformed protobuf"),
    (b"{not json", "application/json", None, "invalid JSON"),
    (b"[1, 2]", "application/json", None, "JSON object"),
    (b'{"resourceSpans": "x"}', "application/json", None, "not an OTLP/JSON"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz!"}]}]}]}', "application/json", None,
     "neither hex nor base64"),
    (b"not gzip", "application/x-protobuf", "gzip", "not valid gzip"),
    (b"", "text/plain", None, "unsupported Content-Type"),
    (b"", "application/json", "br", "unsupported Content-Encoding"),
])
def test_bodies_that_are_not_trace_requests_raise_a_clear_error(body, content_type, encoding, error):
    with pytest.raises(otlp.OtlpDecodeError, match=error):
        otlp.decode_request(body, content_type, encoding)


def test_a_gzip_bomb_stops_at_the_size_limit():
    bomb = gzip.compress(b"\0" * 5_000_000)
    with pytest.raises(otlp.BodyTooLargeError):
        otlp.decode_request(bomb, "application/x-protobuf", "gzip", max_bytes=1_000_000)


def test_openllmetry_span_attributes_become_the_canonical_record():
    outcome = one(S.openllmetry())
    assert isinstance(outcome, Converted), outcome
    raw = outcome.raw
    assert raw["request"] == {"model": "gpt-4o", "temperature": 0.2, "tools": [S.TOOL], "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "where is order 7?"}]}
    assert raw["response"] == {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": '{"id": "7"}'}}]}}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}}
    assert raw["latency_ms"] == 250 and raw["call_id"].startswith("otel-")
    assert raw["tags"]["source_format"] == "gen_ai.attributes" and raw["tags"]["tools_known"] is True
    assert raw["tags"]["service_name"] == "support-bot" and outcome.record.agent_id == "support-bot"


def test_genai_events_become_the_canonical_record_with_tools_unknown():
    attributes, events = S.genai_events()
    outcome = one(attributes, events=events)
    assert isinstance(outcome, Converted), outcome
    assert outcome.raw["request"]["messages"] == [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "hello"}]
    assert outcome.raw["response"]["choices"] == [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": "Hi."}}]
    assert outcome.raw["response"]["usage"]["total_tokens"] == 49
    assert outcome.tools_known is False  # the events record no tool definitions


def test_genai_input_and_output_messages_become_the_canonical_record():
    outcome = one(S.genai_messages())
    assert isinstance(outcome, Converted), outcome
    assert outcome.raw["request"]["messages"] == [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "where is 7?"}]
    assert outcome.raw["request"]["tools"] == [{"type": "function", "function": {
        "name": "lookup_order", "parameters": {"type": "object"}}}]
    (choice,) = outcome.raw["response"]["choices"]
    assert choice["message"]["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "lookup_order", "arguments": '{"id":"7"}'}}]
    assert outcome.raw["tags"]["conversation_id"] == "conv-9"


def test_openinference_span_becomes_the_canonical_record():
    outcome = one(S.openinference())
    assert isinstance(outcome, Converted), outcome
    assert outcome.raw["request"] == {"model": "gpt-4o", "temperature": 0.2,
                                      "messages": [{"role": "user", "content": "where is 7?"}],
                                      "tools": [{"type": "function", "function": {
                                          "name": "lookup_order", "parameters": {"type": "object"}}}]}
    message = outcome.raw["response"]["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {"name": "lookup_order", "arguments": '{"id": "7"}'}
    assert outcome.raw["tags"]["conversation_id"] == "sess-1"


@pytest.mark.parametrize(("attributes", "reason"), [
    ({"http.method": "GET"}, "not_llm_call"),
    ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e"}, "not_llm_call"),
    ({"openinference.span.kind": "TOOL"}, "not_llm_call"),
    ({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, "no_content"),  # capture off
    ({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o"}, "no_content"),
])
def test_spans_that_are_not_llm_calls_or_hold_no_content_are_skipped_with_a_reason(attributes, reason):
    outcome = one(attributes)
    assert isinstance(outcome, Skipped) and outcome.reason == reason and outcome.message


def test_broken_json_in_an_attribute_is_rejected_naming_the_attribute():
    outcome = one(S.genai_messages(**{"gen_ai.input.messages": "[{broken"}))
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "broken_attribute_json" and outcome.field == "gen_ai.input.messages"
    no_messages = one(S.openllmetry(**{"gen_ai.prompt.0.role": "robot"}))
    assert isinstance(no_messages, Rejected) and no_messages.reason == "unknown_role"


def test_a_failed_call_is_recorded_as_an_error_response():
    outcome = one({**S.openllmetry(), "error.type": "RateLimitError"}, status=2)
    assert isinstance(outcome, Converted) and outcome.record.failed
    assert outcome.raw["response"]["error"]["type"] == "RateLimitError"


def test_unflatten_and_flatten_are_inverse():
    flat = {"x.0.a": 1, "x.0.b.0": "q", "x.1.a": 2, "y": [1, 2]}
    assert unflatten(flat, "x") == [{"a": 1, "b": ["q"]}, {"a": 2}]
    assert flatten({"x": [{"a": 1}, {"a": 2}], "y": [1, 2]}) == {"x.0.a": 1, "x.1.a": 2, "y": [1, 2]}


# --- log documents -----------------------------------------------------------------------

LITELLM = {  # a StandardLoggingPayload as LiteLLM documents it (litellm/types/utils.py), trimmed to what is read
    "id": "chatcmpl-l1", "trace_id": "t-1", "call_type": "acompletion", "stream": False, "status": "success",
    "custom_llm_provider": "openai", "model": "gpt-4o", "model_group": "gpt-4o", "api_base": "https://x/v1",
    "startTime": 1760000000.0, "endTime": 1760000000.5, "completionStartTime": 1760000000.5,
    "prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49, "response_cost": 0.0001,
    "metadata": {"user_api_key_alias": "support-bot", "user_api_key_hash": "88dc28"},
    "messages": [{"role": "user", "content": "where is 7?"}],
    "model_parameters": {"temperature": 0.2, "tools": [S.TOOL]},
    "response": {"id": "chatcmpl-l1", "object": "chat.completion", "created": 1760000000, "model": "gpt-4o",
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}],
                 "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}},
    "error_str": None, "hidden_params": {}, "end_user": "", "request_tags": [], "cache_hit": False,
}


def test_litellm_payload_becomes_the_canonical_record_field_by_field():
    outcome = litellm_to_record(LITELLM, None)
    assert isinstance(outcome, Converted), outcome
    record = outcome.record
    assert record.agent_id == "support-bot" and record.call_id == "litellm-t-1-chatcmpl-l1"
    assert record.timestamp.timestamp() == 1760000000.0 and record.latency_ms == 500
    assert outcome.raw["request"] == {"model": "gpt-4o", "messages": LITELLM["messages"], "temperature": 0.2,
                                      "tools": [S.TOOL]}
    assert outcome.raw["response"] == LITELLM["response"]
    failed = litellm_to_record({**LITELLM, "status": "failure", "error_str": "rate limited",
                                "error_information": {"error_class": "RateLimitError", "error_code": "429"}}, None)
    assert isinstance(failed, Converted) and failed.record.failed
    assert failed.raw["response"]["error"] == {"message": "rate limited", "type": "RateLimitError", "code": "429"}
    assert isinstance(litellm_to_record({**LITELLM, "call_type": "aembedding"}, None), Skipped)


def test_data_flywheel_documents_import_unchanged(tmp_path: Path):
    document = {"timestamp": 1760000000, "workload_id": "w1", "client_id": "support-bot",
                "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                "response": {"choices": [{"message": {"role": "assistant", "content": "hello"}}]}}
    path = tmp_path / "flywheel.jsonl"
    hits = {"hits": {"hits": [{"_index": "flywheel", "_source": {**document, "timestamp": 1760000001}}]}}
    path.write_bytes(orjson.dumps(document) + b"\n" + orjson.dumps(hits) + b"\n")
    with LogStore(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        report = import_any(store, [path], tmp_path / "q", key_ring=None)
        rows = list(store.iter_calls("support-bot", after_seq=0, up_to_seq=10, batch_size=10))[0]
    assert report.detected == {str(path): "dfw"} and report.imported == 2 and report.reconciles
    assert {r["workload_id"] for r in rows} == {"w1"}
    assert orjson.loads(rows[0]["request_payload"]) == document["request"]


def test_detection_names_each_format():
    assert detect(S.request()) == "otlp-json"
    assert detect(LITELLM) == detect({"standard_logging_object": LITELLM}) == "litellm"
    assert detect({"client_id": "a", "request": {}, "response": {}}) == "dfw"
    assert detect({"id": "o", "traceId": "t", "type": "GENERATION", "input": [], "output": {}}) == "langfuse"
    assert detect({"context": {"span_id": "s", "trace_id": "t"}, "attributes": {}}) == "openinference"
    assert detect({"agent_id": "a", "request": {}, "response": {}}) == "canonical"
    assert detect({"unrelated": 1}) is None


def test_otlp_file_import_counts_every_span(tmp_path: Path):
    document = S.request(S.span(S.openllmetry()), S.span({"http.method": "GET"}, name="GET /"),
                         S.span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}),
                         S.span(S.genai_messages(**{"gen_ai.output.messages": "{oops"})))
    path = tmp_path / "spans.json"
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))  # one document over many lines
    with LogStore(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        report = import_any(store, [path, path], tmp_path / "q", key_ring=None)
    assert report.detected == {str(path): "otlp-json"}
    assert (report.read, report.imported, report.duplicate, report.quarantined, report.skipped) == (8, 1, 1, 2, 4)
    assert report.skip_reasons == {"not_llm_call": 2, "no_content": 2}
    assert report.quarantine_reasons == {"broken_attribute_json": 2}


def test_import_command_detects_the_format_and_reports_skips(embedded_home: Path, tmp_path: Path):
    import json

    from typer.testing import CliRunner

    from slm_pipeline.cli import app

    path = tmp_path / "spans.jsonl"
    path.write_bytes(orjson.dumps(S.request(S.span(S.openllmetry()), S.span({"http.method": "GET"}))) + b"\n")
    result = CliRunner().invoke(app, ["import", str(path), "--json", "--agent", "support-bot"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["detected"] == {str(path): "otlp-json"} and f"{path}: detected format otlp-json" in result.stderr
    assert (report["read"], report["imported"], report["skipped"]) == (2, 1, 1)
    assert report["skip_reasons"] == {"not_llm_call": 1}
    forced = CliRunner().invoke(app, ["import", str(path), "--format", "litellm"])
    assert forced.exit_code == 0 and "quarantined as wrong_type" not in forced.stdout  # read as payloads: none
    wrong = CliRunner().invoke(app, ["import", str(path), "--format", "zipkin"])
    assert wrong.exit_code == 2 and "unknown --format" in wrong.stderr
