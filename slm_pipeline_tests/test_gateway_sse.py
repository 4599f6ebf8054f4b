"""Streamed answers are reassembled into the completion they stand for, however the bytes are cut."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from slm_pipeline.gateway.fake_upstream import completion, stream_events
from slm_pipeline.gateway.sse import StreamAssembler

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]
REQUEST = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
           "messages": [{"role": "user", "content": "where is order 12345?"}], "tools": TOOLS}


def assemble(*chunks: bytes) -> StreamAssembler:
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.feed(chunk)
    assembler.close()
    return assembler


def test_tool_call_deltas_are_joined_into_the_completion():
    assembler = assemble(b"".join(stream_events(REQUEST)))
    expected = completion(REQUEST)
    result = assembler.result()
    assert assembler.done and assembler.malformed == 0
    assert result["choices"][0]["message"]["tool_calls"] == expected["choices"][0]["message"]["tool_calls"]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert result["usage"] == expected["usage"] and result["model"] == "gpt-4o"


def test_text_choices_parallel_tool_calls_and_sse_details():
    events = [
        b": keep-alive comment\r\n\r\n",
        b'event: message\r\ndata: {"id":"c1","model":"m","choices":[{"index":1,"delta":{"role":"assistant",'
        b'"content":"B"}},{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\r\n\r\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n',
        b'data: {"choices":[{"index":1,"delta":{"tool_calls":[{"index":1,"id":"t2","function":{"name":"b",'
        b'"arguments":"{}"}},{"index":0,"id":"t1","function":{"name":"a","arguments":"{\\"x\\""}}]}}]}\n\n',
        b'data: {"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},'
        b'"finish_reason":"tool_calls"}]}\n\n',
        b"data: not json\n\n",
        b"data: [DONE]",  # no blank line at the very end
    ]
    assembler = assemble(*events)
    first, second = assembler.result()["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hello"} and first["finish_reason"] == "stop"
    calls = second["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("t1", "a", '{"x":1}'), ("t2", "b", "{}")]
    assert second["message"]["content"] == "B"
    assert assembler.done and assembler.malformed == 1


def test_an_error_event_becomes_the_result_and_a_cut_stream_is_not_done():
    error = {"error": {"message": "overloaded", "type": "server_error"}}
    assert assemble(b"data: " + orjson.dumps(error) + b"\n\n").result() == error
    cut = assemble(b"".join(stream_events(REQUEST)[:3]))
    assert not cut.done and cut.result()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup_order"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4000), max_size=30))
def test_any_chunking_of_the_stream_gives_the_same_result(cuts: list[int]):
    stream = b"".join(stream_events(REQUEST)).replace(b"\n", b"\r\n")
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert assemble(*pieces).result() == assemble(stream).result() == assemble(b"".join(stream_events(REQUEST))).result()
