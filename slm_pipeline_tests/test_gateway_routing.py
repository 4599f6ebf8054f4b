"""S6 in the gateway: what makes an SLM answer usable, and how it is streamed back."""

from __future__ import annotations

import json

import pytest

from slm_pipeline.core.refine.routing import Route, RoutingTable, publish_routing_table
from slm_pipeline.core.lake import Lake
from slm_pipeline.gateway.routing import Router, agrees, slm_request, validate_answer
from slm_pipeline.gateway.sse import StreamAssembler, completion_events

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
REQUEST = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Where is order A1?"}], "tools": TOOLS}


def completion(arguments: str = '{"order_id": "A1"}', name: str = "lookup_order", **extra) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "slm-a-c001",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": name, "arguments": arguments}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, **extra}


def test_a_valid_tool_call_passes():
    assert validate_answer(REQUEST, completion(), "tool_call") is None


@pytest.mark.parametrize(("answer", "reason"), [
    (completion(name="cancel_order"), "invalid tool call: cancel_order is not one of the request's tools"),
    (completion('{"order": "A1"}'), "invalid tool call: lookup_order.arguments: 'order_id' is a required property"),
    (completion('{"order_id": 7}'), "invalid tool call: lookup_order.order_id: must be of type string"),
    (completion('{"order_id": "A1"'), "tool call 'lookup_order' has arguments that are not JSON"),
    (completion(slm_parse_error="tool call 1 is not JSON"), "unparseable answer: tool call 1 is not JSON"),
    ({"choices": [{"message": {"role": "assistant", "content": "It shipped."}, "finish_reason": "stop"}]},
     "no tool call in the answer of a tool-calling task"),
    ({"choices": [{"message": {"role": "assistant", "content": "<tool_c"}, "finish_reason": "length"}]},
     "the answer was cut at max_tokens"),
    ({"object": "chat.completion"}, "no choices in the answer"),
])
def test_every_unusable_answer_is_named(answer, reason):
    assert validate_answer(REQUEST, answer, "tool_call") == reason


def test_json_tasks_need_an_object():
    text = {"choices": [{"message": {"role": "assistant", "content": "name: Ada"}, "finish_reason": "stop"}]}
    obj = {"choices": [{"message": {"role": "assistant", "content": '{"name": "Ada"}'}, "finish_reason": "stop"}]}
    assert validate_answer(REQUEST, text, "json") == "the answer is not a JSON object"
    assert validate_answer(REQUEST, obj, "json") is None


def test_shadow_agreement_compares_parsed_answers():
    assert agrees(completion('{"order_id": "A1"}'), completion('{ "order_id" : "A1" }'))
    assert not agrees(completion('{"order_id": "A1"}'), completion('{"order_id": "A2"}'))


def test_the_slm_is_asked_without_streaming_and_with_the_agents_tools():
    body = json.loads(slm_request({**REQUEST, "stream": True, "temperature": 0.3, "max_tokens": 50}, "slm-a-c001"))
    assert body == {"model": "slm-a-c001", "messages": REQUEST["messages"], "stream": False, "tools": TOOLS,
                    "max_tokens": 50}


def test_a_validated_answer_streams_back_as_openai_events_that_reassemble():
    events = completion_events(completion())
    assert events.endswith(b"data: [DONE]\n\n")
    assembler = StreamAssembler()
    assembler.feed(events)
    assembler.close()
    message = assembler.result()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {"name": "lookup_order", "arguments": '{"order_id": "A1"}'}
    assert assembler.result()["choices"][0]["finish_reason"] == "tool_calls"


def test_the_router_routes_nothing_without_a_table_and_reloads_when_it_changes(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    router = Router(str(tmp_path / "lake"))
    assert router.reload() is False and not router.routes_agent("a")
    assert router.decide("a", REQUEST).reason == "no promoted task for this agent"
    publish_routing_table(lake, RoutingTable([Route("a", "c001", "lookup", "slm", "champion", "slm-a-c001", "1")]))
    assert router.reload() is True and router.version == 1 and router.routes_agent("a")
    assert router.reload() is False
    # No clustering artifact for the agent: the call stays on the LLM, saying why.
    decision = router.decide("a", REQUEST)
    assert decision.route == "llm" and "no cluster assigner" in decision.reason


def test_a_broken_routing_artifact_never_costs_the_agent_its_answer(embedded_home, run_gateway, tmp_path):
    import httpx

    from slm_pipeline.core.cluster.pipeline import MODELS_FOLDER
    from slm_pipeline.core.settings import Settings
    from slm_pipeline.core.store import LogStore
    from slm_pipeline.core.store.keys import create_key

    settings = Settings()
    lake = Lake(settings.resolved_lake_url)
    publish_routing_table(lake, RoutingTable([Route("a", "c001", "lookup", "slm", "champion", "slm-a-c001", "1")]))
    lake.put_file(MODELS_FOLDER, "a", "assigner.json", b"{not json")
    lake.put_file(MODELS_FOLDER, "a", "assigner.npz", b"")
    with LogStore(settings.resolved_database_url) as store:
        _, key = create_key(store, "a")
    with run_gateway(settings.resolved_database_url) as gw:
        answer = httpx.post(f"{gw.url}/v1/chat/completions", json=REQUEST, headers={"authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and "x-slm-route" not in answer.headers
        call_id = answer.headers["x-slm-call-id"]
    with LogStore(settings.resolved_database_url) as store:
        [row] = [r for batch in store.iter_calls("a") for r in batch if r["call_id"] == call_id]
    assert row["tags"]["route"] == "llm" and row["tags"]["route_reason"].startswith("routing failed: JSONDecodeError")


def test_an_slm_server_that_is_down_slow_or_answers_is_told_apart(fake_upstream):
    """What the gateway asks of the SLM server, against real sockets: the fake upstream answers with
    a tool call as an SLM would; a closed port and a server that never answers give the LLM the call."""
    import asyncio
    from datetime import datetime, timezone

    from slm_pipeline.gateway.app import Gateway
    from slm_pipeline.gateway.calllog import FinishedCall
    from slm_pipeline.gateway.config import GatewayConfig
    from slm_pipeline_tests.servers import free_port

    async def ask(serving_url: str) -> tuple[bytes | None, dict]:
        gateway = Gateway(GatewayConfig(serving_url=serving_url, slm_timeout_s=0.3), keys=None, call_log=None)
        call = FinishedCall("c1", "a", datetime.now(timezone.utc), 0.0, False, None, "gpt-4o", {}, b"{}", {})
        try:
            return await gateway._ask_slm("slm-a-c001", REQUEST, None, call), call.tags
        finally:
            await gateway.aclose()

    async def scenarios() -> list[tuple[bytes | None, dict]]:
        silent = await asyncio.start_server(lambda reader, writer: reader.read(), "127.0.0.1", 0)
        silent_url = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}/v1"
        try:
            return [await ask(fake_upstream), await ask(f"http://127.0.0.1:{free_port()}/v1"), await ask(silent_url),
                    await ask("ftp://127.0.0.1/v1")]
        finally:
            silent.close()

    (answered, tags), (_, down), (_, slow), (_, bad_url) = asyncio.run(scenarios())
    assert json.loads(answered)["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup_order"
    assert "fallback_reason" not in tags and tags["slm_model"] == "slm-a-c001"
    assert down["route"] == "fallback" and down["fallback_reason"].startswith(
        "the SLM server did not answer: UpstreamError: could not connect to 127.0.0.1:")
    assert slow["fallback_reason"] == "the SLM server did not answer within 0.3 s" and 300 <= slow["slm_ms"] < 2000
    assert bad_url["fallback_reason"].startswith("the SLM server did not answer: ValueError: the upstream URL must be")
