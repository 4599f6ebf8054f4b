"""The gateway's quick checks of chat payloads agree with the pydantic models they speed up:
`ChatRequest` for requests, `Response` for the upstream's answers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from slm_pipeline.core.records import ROLES, ChatRequest, ErrorResponse
from slm_pipeline.core.records import Response as ResponseModel
from slm_pipeline.gateway.chat_payloads import certainly_a_response, certainly_valid, chat_fields, response_kind
from slm_pipeline.gateway.errors import GatewayError

# the strategies below are large; hypothesis warns about the size of their repr
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

# JSON values of every kind, to put where the schema expects something else
anything = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def record(required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
           ) -> st.SearchStrategy[dict[str, Any]]:
    """A right object: the required keys, some optional ones, sometimes an extra key."""
    return st.fixed_dictionaries(required, optional={**optional, "extra": anything})


function_call = record({"name": st.text(max_size=8)}, {"arguments": st.text(max_size=8) | st.dictionaries(
    st.text(max_size=3), anything, max_size=2)})
tool_call = record({"function": function_call}, {"id": st.none() | st.text(max_size=5),
                                                 "type": st.sampled_from(["function", "code"])})
message = record({"role": st.sampled_from([*ROLES, "robot", "USER"])}, {
    "content": st.none() | st.text(max_size=10) | st.lists(st.dictionaries(st.text(max_size=3), anything, max_size=2),
                                                           max_size=2),
    "name": st.none() | st.text(max_size=5), "tool_call_id": st.none() | st.text(max_size=5),
    "tool_calls": st.none() | st.lists(tool_call, max_size=2)})
tool = record({"function": record({"name": st.text(max_size=8)}, {
    "description": st.none() | st.text(max_size=8),
    "parameters": st.none() | st.dictionaries(st.text(max_size=4), anything, max_size=2)})},
    {"type": st.sampled_from(["function", "retrieval"])})
chat_request = record({"model": st.text(max_size=300), "messages": st.lists(message, max_size=3)}, {
    "tools": st.none() | st.lists(tool, max_size=3), "tool_choice": st.none() | st.text(max_size=5) | st.dictionaries(
        st.text(max_size=3), anything, max_size=2), "stream": anything})


def by_pydantic(body: bytes) -> tuple[str, bool] | None:
    try:
        chat = ChatRequest.model_validate_json(body)
    except ValidationError:
        return None
    return (chat.model, (chat.model_extra or {}).get("stream") is True) if len(chat.model) <= 256 else None


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += places(item, (*path, index))
    return found


def mutated(document: Any, path: tuple[Any, ...], replacement: Any, drop: bool) -> Any:
    """The document with the value at `path` replaced (or, in an object, dropped)."""
    if not path:
        return replacement
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if drop and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return document


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_request, st.data())
def test_the_quick_check_accepts_only_what_chat_request_accepts_and_answers_alike(document: Any, data: Any) -> None:
    """A right request, most often with one fault put in at a random place (a value of another kind,
    a key left out): the quick check may pass a body to pydantic, never accept one that it refuses."""
    if data.draw(st.integers(0, 4)):
        path = data.draw(st.sampled_from(places(document)))
        document = mutated(document, path, data.draw(anything), data.draw(st.booleans()))
    body = orjson.dumps(document)
    expected = by_pydantic(body)
    if certainly_valid(body) is not None:
        assert expected is not None, "the quick check accepted a body that ChatRequest refuses"
    try:
        assert chat_fields(body) == expected
    except GatewayError as error:
        assert expected is None
        assert error.status == 400


FULL_REQUEST = {  # every field the schema types, each once
    "model": "gpt-4o", "stream": True, "tool_choice": "auto",
    "messages": [
        {"role": "system", "content": "Be brief.", "name": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"function": {"name": "g", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "ok", "tool_call_id": "c1"}],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}},
              {"function": {"name": "g", "parameters": None}}],
}
REPLACEMENTS = [None, True, 0, 1.5, "", "x", "function", "user", [], [1], ["x"], [{}], {}, {"name": "f"}]


def test_every_single_fault_in_a_full_request_is_judged_as_chat_request_judges_it() -> None:
    """Each value of a request that uses every typed field, replaced by values of every kind or left out."""
    import copy

    assert certainly_valid(orjson.dumps(FULL_REQUEST)) is not None
    cases = 0
    for path in places(FULL_REQUEST):
        for replacement, drop in [(value, False) for value in REPLACEMENTS] + [(None, True)]:
            body = orjson.dumps(mutated(copy.deepcopy(FULL_REQUEST), path, replacement, drop))
            expected = by_pydantic(body)
            assert certainly_valid(body) is None or expected is not None, (path, replacement, drop)
            try:
                assert chat_fields(body) == expected, (path, replacement, drop)
            except GatewayError:
                assert expected is None, (path, replacement, drop)
            cases += 1
    assert cases > 500


FULL_COMPLETION = {  # every field of a chat completion the schema types
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
    "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}},
        {"index": 1, "finish_reason": None, "message": {"role": "assistant", "content": "ok", "name": "n"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}
FULL_ERROR = {"error": {"message": "busy", "type": "server_error", "param": None, "code": 503}}
RESPONSES: TypeAdapter[Any] = TypeAdapter(ResponseModel)


def kind_by_pydantic(body: bytes) -> str | None:
    try:
        parsed = RESPONSES.validate_json(body)
    except ValidationError:
        return None
    return "error" if isinstance(parsed, ErrorResponse) else "completion"


@pytest.mark.parametrize("full", [FULL_COMPLETION, FULL_ERROR], ids=["completion", "error"])
def test_every_single_fault_in_an_answer_is_judged_as_the_response_model_judges_it(full: dict) -> None:
    import copy

    assert certainly_a_response(orjson.dumps(full)) is not None
    for path in places(full):
        for replacement, drop in [(value, False) for value in REPLACEMENTS] + [(None, True)]:
            body = orjson.dumps(mutated(copy.deepcopy(full), path, replacement, drop))
            expected, quick = kind_by_pydantic(body), certainly_a_response(body)
            assert quick is None or quick == expected, (path, replacement, drop)
            if expected is None:
                with pytest.raises(ValidationError):
                    response_kind(body)
            else:
                assert response_kind(body) == expected


def test_the_quick_checks_take_the_common_case(demo_calls: list[dict]) -> None:
    """Real agent requests and answers need no pydantic: this is where the time goes."""
    requests = [orjson.dumps(call["request"]) for call in demo_calls]
    answers = [body for body in (orjson.dumps(call["response"]) for call in demo_calls) if kind_by_pydantic(body)]
    assert len(answers) > 0.9 * len(demo_calls)  # the demo's broken calls aside
    assert all(certainly_valid(body) is not None for body in requests)
    assert all(certainly_a_response(body) is not None for body in answers)


@pytest.mark.parametrize("body", [
    b'{"model": "m", "messages": [{"role": "user", "content": "a"}], "x": NaN}',  # pydantic reads NaN, orjson not
    b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',  # a lone surrogate: refused (400)
    b'{"model": 1, "model": "m", "messages": [{"role": "user"}]}',  # a repeated key: the last one counts
    b'{"model": "m", "messages": [{"role": "user"}], "n": ' + b"9" * 30 + b"}",  # beyond 64 bits
    b'{"model": "m", "messages": [{"role": "user"}]}  ',
    b'\xef\xbb\xbf{"model": "m", "messages": [{"role": "user"}]}',  # a byte-order mark
])
def test_what_orjson_and_pydantic_read_differently_is_decided_by_pydantic(body: bytes) -> None:
    expected = by_pydantic(body)
    try:
        assert chat_fields(body) == expected
    except GatewayError:
        assert expected is None


@pytest.fixture(scope="module")
def demo_calls() -> list[dict]:
    from slm_pipeline.core.demo import generate

    return [call.record for call in generate(300, seed=5)]
