"""The SLM server (`slm-pipeline serve`): a real tiny model, a real LoRA adapter from the MLflow registry, a real
routing table, served over HTTP; and the response building on fixed texts."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from slm_pipeline.core.lake import Lake
from slm_pipeline.core.refine import registry
from slm_pipeline.core.refine.routing import Route, RoutingTable, publish_routing_table
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import serving_messages, task_prompt
from slm_pipeline.gateway.sse import StreamAssembler
from slm_pipeline.serving.config import ServingConfig
from slm_pipeline.serving.responses import chat_completion, stream_events
from slm_pipeline_tests.servers import serve_in_thread

ADAPTER = "slm-support-bot-c001"
CHALLENGER = "slm-support-bot-c001-v2"  # the gateway asks it in the shadow
SERVED = [ADAPTER, CHALLENGER]
TOOL = {"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}
REQUEST = {"messages": [{"role": "system", "content": "You are the support bot of a shop. Be kind."},
                        {"role": "user", "content": "Where is my order A1?"}], "tools": [TOOL]}
TOOL_TEXT = '<tool_call>{"name": "lookup_order", "arguments": {"order_id": "A1"}}</tool_call>'


# --- responses, from fixed generated text ----------------------------------------------------------------------


def test_a_tool_call_becomes_openai_tool_calls_with_json_string_arguments():
    completion = chat_completion("slm-x", TOOL_TEXT, tools=True, prompt_tokens=40, completion_tokens=21)
    choice = completion["choices"][0]
    assert completion["object"] == "chat.completion" and completion["model"] == "slm-x"
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "lookup_order" and call["id"].startswith("call_")
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"order_id": "A1"}
    assert completion["usage"] == {"prompt_tokens": 40, "completion_tokens": 21, "total_tokens": 61}
    assert "slm_parse_error" not in completion


def test_unreadable_tool_calls_come_back_as_text_with_the_reason():
    broken = chat_completion("slm-x", '<tool_call>{"name": "lookup_order", "arguments": {"order_id"',
                             tools=True, finish_reason="length")
    assert broken["slm_parse_error"].startswith("tool call 1 is not JSON")
    assert broken["choices"][0]["message"]["content"].startswith("<tool_call>")
    assert broken["choices"][0]["finish_reason"] == "length"
    untooled = chat_completion("slm-x", TOOL_TEXT, tools=False)
    assert "offers no tools" in untooled["slm_parse_error"] and "tool_calls" not in untooled["choices"][0]["message"]
    text = chat_completion("slm-x", " Your order ships today. ", tools=True)
    assert text["choices"][0]["message"] == {"role": "assistant", "content": "Your order ships today."}
    assert text["choices"][0]["finish_reason"] == "stop" and "slm_parse_error" not in text
    assert "is not JSON" in chat_completion("slm-x", "not json", tools=False, json_mode=True)["slm_parse_error"]


def _reassembled(events: list[bytes]) -> dict:
    assembler = StreamAssembler()
    for event in events:
        assembler.feed(event)
    assembler.close()
    assert assembler.done and assembler.malformed == 0
    return assembler.result()


def test_the_stream_reassembles_to_the_completion():
    completion = chat_completion("slm-x", TOOL_TEXT, tools=True, prompt_tokens=3, completion_tokens=5)
    events = stream_events(completion, include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    whole = _reassembled(events)
    assert whole["choices"][0]["message"]["tool_calls"] == completion["choices"][0]["message"]["tool_calls"]
    assert whole["choices"][0]["finish_reason"] == "tool_calls" and whole["usage"] == completion["usage"]
    broken = chat_completion("slm-x", "<tool_call>{", tools=True)
    final = json.loads(stream_events(broken)[-2].removeprefix(b"data: "))
    assert final["slm_parse_error"] == broken["slm_parse_error"] and final["choices"][0]["finish_reason"] == "stop"


# --- the server --------------------------------------------------------------------------------------------------


@pytest.fixture
def served_home(embedded_home: Path, test_catalogue: Path, tiny_model_folder: Path, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A LoRA adapter on tiny-llama registered and promoted in MLflow (v1; v2 is a challenger), and a routing
    table (v1) routing support-bot/c001 to it, plus a route on another base model; returns the lake."""
    import torch
    from mlflow import MlflowClient
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("SLM_PIPELINE_CATALOGUE", str(test_catalogue))
    torch.manual_seed(1)
    folder = tmp_path / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_folder),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_folder).save_pretrained(folder)
    settings = Settings()
    client = MlflowClient(settings.resolved_mlflow_uri)
    client.create_registered_model(ADAPTER)
    for _ in range(2):
        client.create_model_version(ADAPTER, str(folder), tags={"base_model": "tiny-llama"})
    registry.promote(ADAPTER, "1", "test champion")
    lake = Lake(settings.resolved_lake_url)
    publish_routing_table(lake, _table(with_adapter=True))
    return lake


def _table(with_adapter: bool) -> RoutingTable:
    routes = [Route("support-bot", "c002", "refunds", "slm", "champion", "slm-support-bot-c002", "3",
                    "smollm2-135m-instruct", "slm-support-bot-c002", "Task: refunds.")]
    if with_adapter:
        routes.append(Route("support-bot", "c001", "lookup order", "slm", "champion", ADAPTER, "1", "tiny-llama",
                            ADAPTER, task_prompt("lookup order", "tool_call", [TOOL]), shadow_model=CHALLENGER,
                            shadow_version="2"))
    return RoutingTable(routes)


def _wait_for(client: httpx.Client, version: int) -> dict:
    deadline = time.monotonic() + 20
    while (health := client.get("/healthz").json())["routing_table_version"] != version:
        assert time.monotonic() < deadline, f"the server did not apply routing table v{version}: {health}"
        time.sleep(0.05)
    return health


def test_the_server_answers_for_the_base_model_and_each_adapter_and_follows_the_routing_table(served_home: Lake):
    from slm_pipeline.core.evaluate import render_prompt
    from slm_pipeline.serving.server import build_app

    app = build_app(ServingConfig(base_model="tiny-llama", reload_interval_s=0.1, default_max_tokens=12))
    engine = app.state.server.engine
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        listed = client.get("/v1/models").json()["data"]
        assert [m["id"] for m in listed] == ["tiny-llama", *SERVED]
        assert listed[1]["registered_model"] == ADAPTER and listed[1]["version"] == "1"
        assert listed[1]["role"] == "champion" and listed[1]["parent"] == "tiny-llama"
        assert all(m["owned_by"] for m in listed)
        assert (listed[2]["version"], listed[2]["role"]) == ("2", "challenger")
        assert client.post("/v1/chat/completions", json={"model": CHALLENGER, **REQUEST,
                                                         "max_tokens": 3}).status_code == 200
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["routing_table_version"] == 1
        assert health["models"] == ["tiny-llama", *SERVED]
        [skipped] = health["skipped"]
        assert skipped["model"] == "slm-support-bot-c002" and "this server serves tiny-llama" in skipped["reason"]

        # the adapter, through its task prompt; a random model's output is no valid JSON object
        answer = client.post("/v1/chat/completions", json={"model": ADAPTER, **REQUEST,
                                                           "response_format": {"type": "json_object"}})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["object"] == "chat.completion" and body["model"] == ADAPTER and body["id"].startswith("chatcmpl-")
        assert body["slm_parse_error"] and isinstance(body["choices"][0]["message"]["content"], str)
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        rendered = render_prompt(engine.tokenizer, serving_messages(_table(True).routes[1].task_prompt, REQUEST))
        assert body["usage"]["prompt_tokens"] == engine.count_tokens(rendered)
        assert 1 <= body["usage"]["completion_tokens"] <= 12

        # the same prompt on the base model answers differently: the adapter was applied
        same_prompt = {"model": "tiny-llama", "messages": serving_messages(_table(True).routes[1].task_prompt, REQUEST),
                       "response_format": {"type": "json_object"}}
        plain = client.post("/v1/chat/completions", json=same_prompt).json()
        assert plain["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"]
        assert plain["choices"][0]["message"]["content"] != body["choices"][0]["message"]["content"]

        # a long generation runs in a worker thread: /healthz answers meanwhile
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(client.post, "/v1/chat/completions",
                               json={"model": "tiny-llama", **REQUEST, "max_tokens": 300})
            deadline, seen_waiting = time.monotonic() + 30, False
            while not long.done() and not seen_waiting and time.monotonic() < deadline:
                seen_waiting = client.get("/healthz", timeout=2).json()["waiting"] == 1
            usage, choice = long.result().json()["usage"], long.result().json()["choices"][0]
        assert seen_waiting
        assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 300 else "stop")

        # the base model, with the request's own messages; and its stream says the same
        base = client.post("/v1/chat/completions", json={"model": "tiny-llama", **REQUEST, "max_tokens": 5}).json()
        assert base["model"] == "tiny-llama" and base["usage"]["completion_tokens"] <= 5
        assert base["usage"]["prompt_tokens"] == engine.count_tokens(render_prompt(engine.tokenizer,
                                                                                    REQUEST["messages"]))
        with client.stream("POST", "/v1/chat/completions",
                           json={"model": "tiny-llama", **REQUEST, "max_tokens": 5, "stream": True}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = list(stream.iter_bytes())
        assert b"".join(events).endswith(b"data: [DONE]\n\n")
        assert _reassembled(events)["choices"][0]["message"] == base["choices"][0]["message"]

        # errors, in OpenAI's shape
        unknown = client.post("/v1/chat/completions", json={"model": "gpt-4o", **REQUEST})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        assert "tiny-llama" in unknown.json()["error"]["message"] and ADAPTER in unknown.json()["error"]["message"]
        malformed = client.post("/v1/chat/completions", content=b"{not json",
                                headers={"content-type": "application/json"})
        assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
        missing = client.post("/v1/chat/completions", json={"model": ADAPTER})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
        too_many = client.post("/v1/chat/completions", json={"model": ADAPTER, **REQUEST, "max_tokens": 10**6})
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_tokens"

        # a routing table without the route unloads the adapter; the next one loads it again
        publish_routing_table(served_home, _table(with_adapter=False))
        assert _wait_for(client, 2)["models"] == ["tiny-llama"]
        gone = client.post("/v1/chat/completions", json={"model": ADAPTER, **REQUEST})
        assert gone.status_code == 404 and engine.adapters == {}
        assert client.post("/v1/chat/completions", json={"model": "tiny-llama", **REQUEST,
                                                         "max_tokens": 5}).json()["choices"] == base["choices"]
        publish_routing_table(served_home, _table(with_adapter=True))
        assert _wait_for(client, 3)["models"] == ["tiny-llama", *SERVED]
        again = client.post("/v1/chat/completions", json={"model": ADAPTER, **REQUEST,
                                                          "response_format": {"type": "json_object"}}).json()
        assert again["choices"] == body["choices"]


def test_export_for_vllm_writes_the_adapters_and_their_lora_modules(served_home: Lake, tmp_path: Path):
    from slm_pipeline.serving.export import export_for_vllm

    export = export_for_vllm(tmp_path / "vllm", base_model="tiny-llama")
    assert [m["name"] for m in export.lora_modules] == SERVED
    module = export.lora_modules[0]
    assert module["base_model_name"] == "tiny-llama" == export.base_model
    assert (Path(module["path"]) / "adapter_config.json").is_file() and export.max_lora_rank == 8
    assert [s["model"] for s in export.skipped] == ["slm-support-bot-c002"]
    lines = (tmp_path / "vllm" / "lora-modules.txt").read_text().splitlines()
    assert [json.loads(line) for line in lines] == export.lora_modules
    publish_routing_table(served_home, _table(with_adapter=False))
    assert export_for_vllm(tmp_path / "vllm", base_model="tiny-llama").lora_modules == []
    assert not (tmp_path / "vllm" / "adapters" / ADAPTER).exists()
