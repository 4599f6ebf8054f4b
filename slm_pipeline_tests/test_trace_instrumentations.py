"""S1 from real traces: a real `openai` client, instrumented by each of the three instrumentation packages, calls
the fake upstream (plain, streaming, with tools, a tool result); the real OTLP/HTTP exporter sends its spans to
the running gateway. Every call is logged once, with the same request, answer and tool calls as the same call
through the gateway's proxy; the same spans written to a file import to the same records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from slm_pipeline.core.collect import open_payloads, rows_to_frame
from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key
from slm_pipeline.core.trace_formats.files import import_any
from slm_pipeline_tests.instrumented_agent import CALLS, TOOLS
from slm_pipeline_tests.test_gateway_proxy import stored

INSTRUMENTATIONS = ["openai-v2", "openllmetry", "openinference"]
TOOLS_RECORDED = {"openai-v2": False, "openllmetry": True, "openinference": True}
"""Whether the instrumentation records the tool definitions offered (openai-v2 records messages only)."""


def agent(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "slm_pipeline_tests.instrumented_agent", *args],
                            capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]


def opened(rows: list[dict], key_ring) -> dict[str, tuple[dict, dict, dict]]:  # noqa: ANN001
    """{the call's last user message: (request, response, tags)}."""
    frame = open_payloads(rows_to_frame(rows, key_ring), key_ring)
    calls = {}
    for request, response, row in zip(frame["request"], frame["response"], rows):
        request, response = orjson.loads(request), orjson.loads(response)
        last_user = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
        assert last_user not in calls, f"{last_user!r} logged twice"
        calls[last_user] = (request, response, row["tags"])
    return calls


def normal_message(message: dict) -> dict:
    """A message compared by meaning: tool-call arguments parsed, absent and null fields alike."""
    out = {k: v for k, v in message.items() if v is not None and k != "refusal"}
    if "tool_calls" in out:
        out["tool_calls"] = [{"id": c["id"], "name": c["function"]["name"],
                              "arguments": orjson.loads(c["function"]["arguments"])} for c in out["tool_calls"]]
    return out


@pytest.mark.parametrize("instrumentation", INSTRUMENTATIONS)
def test_spans_of_each_instrumentation_are_logged_like_proxied_calls(instrumentation: str, run_gateway, key_ring,
                                                                      fake_upstream: str, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    spans_file = tmp_path / "spans.jsonl"
    with LogStore(url, create=True) as store:
        _, traced_key = create_key(store, "traced-agent")
        _, proxied_key = create_key(store, "proxied-agent")
        with run_gateway(url) as gw:
            agent(instrumentation, fake_upstream, "sk-upstream", "--otlp", gw.url, "--otlp-key", traced_key,
                  "--spans", str(spans_file))
            agent("none", f"{gw.url}/v1", proxied_key)
            assert gw.call_log.flush()
        rows = stored(store)
    traced = opened([r for r in rows if r["agent_id"] == "traced-agent"], key_ring)
    proxied = opened([r for r in rows if r["agent_id"] == "proxied-agent"], key_ring)
    assert len(traced) == len(proxied) == len(CALLS), "every call logged once"
    assert {r["source"] for r in rows if r["agent_id"] == "traced-agent"} == {"otlp"}

    for question, (request, response, tags) in traced.items():
        expected_request, expected_response, _ = proxied[question]
        assert request["model"] == expected_request["model"] == "gpt-4o"
        assert [normal_message(m) for m in request["messages"]] == \
            [normal_message(m) for m in expected_request["messages"]], question
        if TOOLS_RECORDED[instrumentation]:
            assert request.get("tools") == expected_request.get("tools"), question
            assert tags["tools_known"] is True
        else:
            assert "tools" not in request and tags["tools_known"] is False
        (choice,) = response["choices"]
        (expected,) = expected_response["choices"]
        assert normal_message(choice["message"]) == normal_message(expected["message"]), question
        assert choice["finish_reason"] == expected["finish_reason"], question
        assert response["id"] == expected_response["id"] == "chatcmpl-fake"
        if "usage" in response:
            assert response["usage"] == expected_response["usage"], question
        assert tags["service_name"] == f"{instrumentation}-service" and tags["trace_id"]
    assert any("tool_calls" in r[1]["choices"][0]["message"] for r in traced.values())
    assert TOOLS == proxied["tools: where is order 7?"][0]["tools"]

    # the same spans, from the file the exporter wrote: detected, and the same records
    with LogStore(url) as store:
        again = import_any(store, [spans_file], tmp_path / "q", agent_id="traced-agent", key_ring=key_ring)
    assert again.detected == {str(spans_file): "otlp-json"}
    assert again.duplicate == len(CALLS) and again.imported == 0 and again.reconciles  # the same call ids
    fresh_url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    with LogStore(fresh_url, create=True) as fresh:
        report = import_any(fresh, [spans_file], tmp_path / "q", agent_id="traced-agent", key_ring=key_ring)
        imported = opened(stored(fresh), key_ring)
    assert report.imported == len(CALLS) and report.quarantined == 0 and report.reconciles
    assert report.read == report.imported + report.skipped
    assert {q: (r[0], r[1]) for q, r in imported.items()} == {q: (r[0], r[1]) for q, r in traced.items()}
