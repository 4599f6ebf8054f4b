"""Property tests for what stands between an SLM's raw text and an agent: the SLM server's answer building
(`serving/responses.py`) and the gateway's answer validation (`gateway/routing.validate_answer`).

`core.toolcalls.parse_answer` has its own property tests (test_toolcalls.py); these target what is built
on it: the OpenAI-shaped completion and its events for any generated text (near-miss `<tool_call>`
markup, truncated JSON, unicode, huge numbers, deep nesting), and the gateway's verdict on any SLM
response against any request's tools, which must never raise and never quote an argument's value."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from slm_pipeline.core.toolcalls import parse_answer
from slm_pipeline.gateway.routing import validate_answer
from slm_pipeline.serving.responses import PARSE_ERROR_FIELD, chat_completion, read_answer, stream_events

SETTINGS = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def strict_json(text: str) -> Any:
    """RFC 8259 JSON only: what an agent in any language can parse (no NaN, no Infinity)."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


# --- generated model output --------------------------------------------------------------------

huge_ints = st.sampled_from([30, 70, 300, 4000]).map(lambda digits: -(10**digits) + 1)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints,
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                           max_leaves=20)
arguments = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
names = st.one_of(st.sampled_from(["lookup_order", "issue_refund", "search"]), st.text(min_size=1, max_size=20))


@st.composite
def tool_call_block(draw: st.DrawFn) -> str:
    """One `<tool_call>` block, well-formed or a near miss a small model might produce."""
    call: Any = {"name": draw(names), "arguments": draw(arguments)}
    shape = draw(st.sampled_from(["plain"] * 4 + ["string_args", "no_name", "list_args", "not_object", "extra"]))
    if shape == "string_args":
        call["arguments"] = json.dumps(call["arguments"])
    elif shape == "no_name":
        del call["name"]
    elif shape == "list_args":
        call["arguments"] = draw(st.lists(scalars, max_size=3))
    elif shape == "not_object":
        call = draw(json_values)
    elif shape == "extra":
        call["id"] = draw(st.text(max_size=8))
    body = json.dumps(call, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
    if draw(st.integers(0, 3)) == 0:  # cut anywhere, as max_new_tokens does
        body = body[:draw(st.integers(0, len(body)))]
    open_tag = draw(st.sampled_from(["<tool_call>"] * 10 + ["<tool_call >", "<tool-call>", "<TOOL_CALL>", "<tool_call"]))
    close_tag = draw(st.sampled_from(["</tool_call>"] * 10 + ["", "</tool_call", "</toolcall>", "<tool_call>"]))
    return f"{open_tag}{draw(st.sampled_from(['', ' ', chr(10)]))}{body}{close_tag}"


raw_json_junk = st.sampled_from([
    "[" * 50_000, "{\"a\":" * 20_000, "1" * 5_000, "-" + "9" * 4_500, "NaN", "Infinity", "-Infinity",
    "\"\\ud800\"", "\"\\udfff x\"", "{\"a\": \"\\ud83d\"}", "{}", "[]", "null", "\"\\u0000\"", "1e999",
])


@st.composite
def mixed_output(draw: st.DrawFn) -> str:
    """What a model may generate: prose, JSON, tool-call blocks (some broken), junk, in any order."""
    parts = draw(st.lists(st.one_of(
        st.text(max_size=40),
        st.text(alphabet=st.sampled_from(list('<>/{}[]":,\\ ntoolcal_1e9-')), max_size=40),
        tool_call_block(),
        json_values.map(json.dumps),
        raw_json_junk,
        raw_json_junk.map(lambda junk: f'<tool_call>{{"name": "f", "arguments": {{"x": {junk}}}}}</tool_call>'),
        raw_json_junk.map(lambda junk: f'<tool_call>{{"name": "f", "arguments": "{{\\"x\\": {junk}}}"}}'),
    ), max_size=4))
    return draw(st.sampled_from(["", " ", "\n"])).join(parts)


model_output = st.one_of(tool_call_block(), st.lists(tool_call_block(), min_size=2, max_size=3).map("\n".join),
                         mixed_output())

PARSE_ERRORS = re.compile(
    r"the model answered with a tool call but the request offers no tools"
    r"|no <tool_call> block in the output"
    r"|tool call \d+ (is not JSON \(.+\)|has no function name|has arguments that are not JSON"
    r"|has arguments that are not an object)"
    r"|the output is not JSON \(.+\)|the output is JSON but not an object", re.DOTALL)


def check_completion(completion: dict[str, Any], text: str, tools: bool, json_mode: bool) -> None:
    """The completion is OpenAI's shape and says what the text held, or why it could not be read."""
    wire = orjson.loads(orjson.dumps(completion))  # what the server sends: must serialise (strict UTF-8)
    assert wire["object"] == "chat.completion" and wire["model"] == "m" and wire["id"].startswith("chatcmpl-")
    [choice] = wire["choices"]
    message = choice["message"]
    assert message["role"] == "assistant" and choice["index"] == 0
    error = wire.get(PARSE_ERROR_FIELD)
    if message.get("tool_calls"):
        assert error is None and message["content"] is None and choice["finish_reason"] == "tool_calls"
        held = parse_answer(text, "tool_call")  # the object the text held, call by call
        assert held.kind == "tool_call" and tools
        assert len({call["id"] for call in message["tool_calls"]}) == len(message["tool_calls"])
        for call, original in zip(message["tool_calls"], held.tool_calls, strict=True):
            assert call["type"] == "function" and call["function"]["name"] == original.name != ""
            assert isinstance(call["function"]["arguments"], str)
            assert strict_json(call["function"]["arguments"]) == original.arguments
        return
    assert set(message) == {"role", "content"} and isinstance(message["content"], str)
    if error is not None:
        assert PARSE_ERRORS.fullmatch(error), error
        assert message["content"] == text.strip()  # the text as it came, for the gateway to judge
    elif json_mode and "<tool_call>" not in text:
        assert isinstance(strict_json(message["content"]), dict)
    else:
        assert "<tool_call>" not in text and message["content"] == text.strip()
    if "<tool_call>" in text:
        assert error is not None  # it tried to be a tool call and is none: the gateway must know
    assert choice["finish_reason"] in ("stop", "length")


def check_events(completion: dict[str, Any], include_usage: bool) -> None:
    """The events add up to the completion: role, content or tool calls, finish reason (+ parse error), usage."""
    events = stream_events(completion, include_usage=include_usage)
    assert events[-1] == b"data: [DONE]\n\n" and all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    chunks = [orjson.loads(e[len(b"data: "):]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == completion["id"] for c in chunks)
    deltas = [c["choices"][0] for c in chunks if c["choices"]]
    message, choice = completion["choices"][0]["message"], completion["choices"][0]
    assert deltas[0]["delta"]["role"] == "assistant"
    content = "".join(d["delta"].get("content") or "" for d in deltas)
    calls = [call for d in deltas for call in d["delta"].get("tool_calls", [])]
    if message.get("tool_calls"):
        assert [{k: v for k, v in c.items() if k != "index"} for c in calls] == message["tool_calls"]
        assert [c["index"] for c in calls] == list(range(len(calls))) and content == ""
    else:
        assert not calls and content == (message["content"] or "")
    assert deltas[-1]["finish_reason"] == choice["finish_reason"] and deltas[-1]["delta"] == {}
    assert chunks[len(deltas) - 1].get(PARSE_ERROR_FIELD) == completion.get(PARSE_ERROR_FIELD)
    usage = [c["usage"] for c in chunks if "usage" in c]
    assert usage == ([completion["usage"]] if include_usage else [])


@SETTINGS
@given(text=model_output, tools=st.sampled_from([True, True, True, False]), json_mode=st.booleans(),
       finish=st.sampled_from(["stop", "length"]), include_usage=st.booleans())
@example(text='<tool_call>{"name": "f", "arguments": {"n": ' + "1" * 5000 + "}}</tool_call>",
         tools=True, json_mode=False, finish="stop", include_usage=False)
@example(text="<tool_call>" + "[" * 100_000, tools=True, json_mode=False, finish="length", include_usage=True)
@example(text='<tool_call>{"name": "f", "arguments": {"s": "\\ud800"}}</tool_call>', tools=True, json_mode=False,
         finish="stop", include_usage=False)
@example(text='<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>', tools=True, json_mode=False,
         finish="stop", include_usage=False)
@example(text='{"x": Infinity}', tools=False, json_mode=True, finish="stop", include_usage=False)
def test_any_model_output_becomes_an_openai_completion_or_a_named_parse_error(
        text: str, tools: bool, json_mode: bool, finish: str, include_usage: bool):
    completion = chat_completion("m", text, tools=tools, json_mode=json_mode, finish_reason=finish,
                                 prompt_tokens=3, completion_tokens=5)
    event(re.sub(r"\d+|\(.*", "", completion.get(PARSE_ERROR_FIELD) or
                 ("tool calls" if completion["choices"][0]["message"].get("tool_calls") else "text")))
    check_completion(completion, text, tools, json_mode)
    check_events(completion, include_usage)


@SETTINGS
@given(calls=st.lists(st.tuples(names.filter(str.strip), arguments), min_size=1, max_size=3),
       separator=st.sampled_from(["", "\n", " "]), ascii_only=st.booleans(), unterminated=st.booleans())
def test_every_rendered_valid_tool_call_round_trips(calls, separator: str, ascii_only: bool, unterminated: bool):
    text = separator.join(
        f"<tool_call>{json.dumps({'name': name, 'arguments': args}, ensure_ascii=ascii_only)}</tool_call>"
        for name, args in calls)
    if unterminated:  # generation stopped right after the last JSON object
        text = text.removesuffix("</tool_call>")
    answer, error = read_answer(text, tools=True)
    assert error is None and answer.kind == "tool_call"
    message = orjson.loads(orjson.dumps(chat_completion("m", text, tools=True)))["choices"][0]["message"]
    assert [(c["function"]["name"], strict_json(c["function"]["arguments"])) for c in message["tool_calls"]] \
        == [(name, args) for name, args in calls]


# --- the gateway's validation of the SLM's answer --------------------------------------------

REASONS = re.compile(
    r"unparseable answer: .*|no choices in the answer|the answer was cut at max_tokens"
    r"|the answer is not a chat completion \(.+\)"
    r"|tool call .+ has arguments that are not JSON"
    r"|no tool call in the answer of a tool-calling task"
    r"|invalid tool call: .+"
    r"|the request's tool schema cannot be checked \(\w+\)"
    r"|the answer is not a JSON object", re.DOTALL)

MARKER = "mkr"  # every argument value the SLM gives carries a unique marker; no reason may quote one


@st.composite
def marked_values(draw: st.DrawFn, depth: int = 2) -> Any:
    """An argument value whose every string is a fresh marker (numbers kept distinctive too)."""
    kind = draw(st.sampled_from(["str", "num", "bool", "null", "list", "obj"] if depth else ["str", "num"]))
    if kind == "str":
        return f"{MARKER}{draw(st.integers(10_000, 99_999))}{draw(st.sampled_from(['', ' Jane Doe', '@x.org']))}"
    if kind == "num":
        return draw(st.sampled_from([8_675_309_123, -4_242_424_242, 31_415_926.53, 10**40]))  # NUMBERS
    if kind == "bool":
        return draw(st.booleans())
    if kind == "null":
        return None
    if kind == "list":
        return draw(st.lists(marked_values(depth - 1), max_size=3))
    return draw(st.dictionaries(st.sampled_from(["order_id", "amount", "email", "q"]), marked_values(depth - 1),
                                max_size=3))


NUMBERS = ("8675309123", "4242424242", "31415926.53", "1" + "0" * 40)  # the distinctive numbers marked_values gives


def value_markers(completion: dict[str, Any]) -> set[str]:
    """The marked argument values anywhere in a completion (arguments, JSON strings, content)."""
    text = json.dumps(completion)
    return set(re.findall(f"{MARKER}\\d{{5}}", text)) | {number for number in NUMBERS if number in text}


schema_types = st.sampled_from(["string", "integer", "number", "boolean", "object", "array", "null"])
property_schemas = st.one_of(
    st.fixed_dictionaries({"type": schema_types}),
    st.fixed_dictionaries({"type": st.just("string"), "maxLength": st.integers(0, 5)}),
    st.fixed_dictionaries({"type": st.just("string"), "pattern": st.sampled_from(["^ORD-\\d+$", "^[a-z]+$"])}),
    st.fixed_dictionaries({"type": st.just("string"), "format": st.just("email")}),
    st.fixed_dictionaries({"enum": st.lists(st.sampled_from(["a", "b", 1, None]), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"const": st.sampled_from(["x", 7])}),
    st.fixed_dictionaries({"type": st.just("number"), "minimum": st.integers(-5, 5), "multipleOf": st.just(2)}),
    st.fixed_dictionaries({"type": st.just("array"), "items": st.fixed_dictionaries({"type": schema_types}),
                           "maxItems": st.integers(0, 2), "uniqueItems": st.booleans()}),
    st.fixed_dictionaries({"not": st.fixed_dictionaries({"type": schema_types})}),
    st.just(False), st.just(True),
    # schemas an agent may send that jsonschema cannot use
    st.sampled_from([{"type": "strnig"}, {"pattern": "("}, {"$ref": "#/definitions/missing"}, {"minimum": "x"},
                     {"required": 5}, {"type": 7}, {"maxLength": "long"}]),
)
parameter_schemas = st.one_of(
    st.none(), st.just({}),
    st.fixed_dictionaries({"type": st.just("object"),
                           "properties": st.dictionaries(st.sampled_from(["order_id", "amount", "email", "q"]),
                                                         property_schemas, max_size=4),
                           "required": st.lists(st.sampled_from(["order_id", "amount", "email", "q"]), max_size=2,
                                                unique=True),
                           "additionalProperties": st.booleans()}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),  # anything at all
)
request_tools = st.lists(st.fixed_dictionaries(
    {"type": st.just("function"),
     "function": st.fixed_dictionaries({"name": names}, optional={"parameters": parameter_schemas})}), max_size=3)


@st.composite
def slm_completion(draw: st.DrawFn, tool_names: list[str]) -> dict[str, Any]:
    """An SLM server's answer as the gateway reads it (a JSON object): mostly well-formed (tool calls whose
    arguments carry marked values, to be checked against the request's schemas), else broken somewhere."""
    call_names = st.sampled_from(tool_names) if tool_names and draw(st.integers(0, 4)) else names
    broken = draw(st.integers(0, 2)) == 0

    def tool_call() -> Any:
        args = draw(st.dictionaries(st.sampled_from(["order_id", "amount", "email", "q", "extra"]), marked_values(),
                                    max_size=4))
        encoded = draw(st.sampled_from(["json"] * 3 + ["dict"] + (["truncated", "not_object", "raw"] if broken else [])))
        arguments: Any = {"json": json.dumps(args), "dict": args, "truncated": json.dumps(args)[:-1],
                          "not_object": json.dumps([args]), "raw": draw(json_values)}[encoded]
        call = {"id": "call_1", "type": "function", "function": {"name": draw(call_names), "arguments": arguments}}
        return draw(st.sampled_from([call, call["function"], {"function": "x"}, "junk", None])) if broken else call

    content = draw(st.one_of(st.none(), st.text(max_size=30), marked_values().map(json.dumps),
                             st.just('{"x": ' + "1" * 5000 + "}"), st.just("[" * 5000), st.just('{"x": NaN}'),
                             *([json_values] if broken else [])))
    message: Any = {"role": "assistant", "content": content}
    if draw(st.integers(0, 3)):
        message["tool_calls"] = draw(st.one_of(st.lists(st.builds(tool_call), min_size=1, max_size=3),
                                               *([json_values] if broken else [])))
    if broken:
        message = draw(st.sampled_from([message, None, "text", [message], {}, {"role": "wizard"}]))
    choice: Any = {"index": 0, "message": message,
                   "finish_reason": draw(st.sampled_from(["stop", "tool_calls"] + (["length", None, 3] if broken
                                                                                   else [])))}
    choices: Any = [choice]
    if broken:
        if draw(st.booleans()):
            del choice["message"]
        choices = draw(st.sampled_from([[choice], [], None, "x", [None], [choice, choice], {"0": choice}]))
    completion: dict[str, Any] = {"id": "chatcmpl-x", "object": "chat.completion", "model": "slm", "choices": choices}
    if broken and draw(st.booleans()):
        completion[PARSE_ERROR_FIELD] = draw(st.sampled_from([
            "tool call 1 is not JSON (Expecting value)", "the output is JSON but not an object",
            "the model answered with a tool call but the request offers no tools"]))
    if broken and draw(st.integers(0, 5)) == 0:
        completion.pop("choices")
    return completion


@st.composite
def routed_call(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    tools = draw(st.one_of(st.none(), request_tools, request_tools.filter(bool)))
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "where is my order?"}]}
    if tools is not None:
        request["tools"] = tools
    tool_names = [t["function"]["name"] for t in tools or []]
    return request, draw(slm_completion(tool_names))


@SETTINGS
@given(call=routed_call(), answer_kind=st.sampled_from(["tool_call"] * 3 + ["json", "text", None]))
@example(call=({"model": "m", "messages": [], "tools": [{"type": "function", "function": {
    "name": "lookup_order", "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}]},
    {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "lookup_order",
                                                      "arguments": '{"order_id": ' + "7" * 5000 + "}"}}]}}]}),
    answer_kind="tool_call")
@example(call=({"model": "m", "messages": [], "tools": [{"type": "function", "function": {
    "name": "lookup_order", "parameters": {"type": "object", "properties": {"order_id": {"type": "strnig"}}}}}]},
    {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "lookup_order",
                                                      "arguments": '{"order_id": "mkr12345 Jane Doe"}'}}]}}]}),
    answer_kind="tool_call")
def test_the_gateway_judges_any_slm_answer_with_a_value_free_reason(call, answer_kind):
    request, completion = call
    reason = validate_answer(request, completion, answer_kind)
    event(re.sub(r"[(:].*", "", reason or "valid", flags=re.DOTALL))
    if reason is None:  # valid: the agent gets it, so it must be what was asked for
        message = completion["choices"][0]["message"]
        assert completion["choices"][0]["finish_reason"] != "length" and PARSE_ERROR_FIELD not in completion
        if answer_kind == "tool_call":
            tools = {t["function"]["name"] for t in request.get("tools") or []}
            assert message["tool_calls"] and all(c["function"]["name"] in tools for c in message["tool_calls"])
        return
    assert isinstance(reason, str) and REASONS.fullmatch(reason), reason
    for value in value_markers(completion):
        assert value not in reason, (value, reason)


@SETTINGS
@given(text=model_output, tools=request_tools.filter(bool),
       answer_kind=st.sampled_from(["tool_call", "json", "text", None]))
def test_whatever_the_slm_server_answers_the_gateway_can_judge(text: str, tools, answer_kind):
    """End to end in process: model text -> the SLM server's completion on the wire -> the gateway's verdict."""
    wire = orjson.dumps(chat_completion("m", text, tools=True))
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    reason = validate_answer(request, orjson.loads(wire), answer_kind)
    assert reason is None or REASONS.fullmatch(reason), reason


def test_marker_values_are_recognised():
    completion = {"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": json.dumps(
        {"a": [f"{MARKER}12345 Jane Doe", 8_675_309_123], "b": {"c": True}})}}]}}]}
    assert value_markers(completion) == {f"{MARKER}12345", "8675309123"}
