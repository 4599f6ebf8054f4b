from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from slm_pipeline.core.records import CallRecord, ErrorResponse, call_id_of, describe_validation_error

BASE = {
    "timestamp": "2026-10-01T12:00:00Z",
    "agent_id": "support-bot",
    "request": {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Where is ORD-1?"}],
        "tools": [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}],
        "temperature": 0.2,
    },
    "response": {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "lookup_order", "arguments": "{\"order_id\": \"ORD-1\"}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    },
}


def record(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return raw


def test_valid_record_keeps_unknown_openai_fields():
    parsed = CallRecord.model_validate(record())
    assert parsed.agent_id == "support-bot"
    assert parsed.request.model_extra == {"temperature": 0.2}
    assert parsed.response.choices[0].message.tool_calls[0].function.name == "lookup_order"
    assert not parsed.failed


def test_flywheel_shape_client_id_and_epoch_seconds():
    raw = record(timestamp=1715854074, workload_id="tool_call_routing")
    raw["client_id"] = raw.pop("agent_id")
    parsed = CallRecord.model_validate(raw)
    assert parsed.agent_id == "support-bot"
    assert parsed.timestamp == datetime.fromtimestamp(1715854074, tz=timezone.utc)


def test_epoch_milliseconds_and_naive_iso_are_utc():
    assert CallRecord.model_validate(record(timestamp=1715854074123)).timestamp.year == 2024
    naive = CallRecord.model_validate(record(timestamp="2026-10-01T12:00:00")).timestamp
    assert naive.tzinfo == timezone.utc and naive.hour == 12
    shifted = CallRecord.model_validate(record(timestamp="2026-10-01T14:00:00+02:00")).timestamp
    assert shifted == naive


def test_error_response_is_a_failed_call():
    raw = record(response={"error": {"message": "Rate limit", "type": "rate_limit_error", "code": 429}})
    parsed = CallRecord.model_validate(raw)
    assert isinstance(parsed.response, ErrorResponse) and parsed.failed


def test_content_hash_call_id_is_stable_and_time_sensitive():
    one = CallRecord.model_validate(record())
    again = CallRecord.model_validate(record())
    later = CallRecord.model_validate(record(timestamp="2026-10-01T12:00:01Z"))
    assert call_id_of(one, record()) == call_id_of(again, record())
    assert call_id_of(one, record()) != call_id_of(later, record(timestamp="2026-10-01T12:00:01Z"))
    assert call_id_of(CallRecord.model_validate(record(call_id="abc")), record()) == "abc"


def _reason(raw):
    with pytest.raises(ValidationError) as info:
        CallRecord.model_validate(raw)
    return describe_validation_error(info.value)


@pytest.mark.parametrize(("mutate", "reason", "field"), [
    (lambda r: r["request"]["messages"][1].update(role="robot"), "unknown_role", "request.messages[1].role"),
    (lambda r: r.pop("request"), "missing_field", "request"),
    (lambda r: r["request"].pop("messages"), "missing_field", "request.messages"),
    (lambda r: r.pop("agent_id"), "missing_field", "agent_id (or client_id)"),
    (lambda r: r.update(latency_ms="fast"), "wrong_type", "latency_ms"),
    (lambda r: r.update(tags=["a"]), "wrong_type", "tags"),
    (lambda r: r.update(timestamp="yesterday"), "wrong_type", "timestamp"),
    (lambda r: r.update(agent_id="has spaces/and slashes"), "invalid_value", "agent_id"),
    (lambda r: r.update(agent_id="dots...dots"), "invalid_value", "agent_id"),  # not a Dagster partition key
    (lambda r: r["response"].update(choices=[]), "invalid_value", "response.choices"),
    (lambda r: r["request"].update(messages=[]), "invalid_value", "request.messages"),
])
def test_validation_errors_name_reason_and_field(mutate, reason, field):
    raw = record()
    mutate(raw)
    got_reason, got_field, message = _reason(raw)
    assert (got_reason, got_field) == (reason, field)
    assert field in message
