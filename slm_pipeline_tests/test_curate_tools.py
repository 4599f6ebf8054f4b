"""Calls recorded without their tool definitions (openai-v2 spans): S2 completes them with the agent's tools
(registered, or offered in its other calls) and drops those whose tools stay unknown as `tools_unknown`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from slm_pipeline.cli import app
from slm_pipeline.core.collect import RAW_TABLE, rows_to_frame
from slm_pipeline.core.curate.pipeline import CURATED_TABLE, DROPPED_TABLE, CurationConfig, curate_agent, \
    curate_calls
from slm_pipeline.core.curate.tools import ToolListError, parse_tool_list, registered_tools
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.settings import Settings

LOOKUP = {"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object", "properties": {
    "id": {"type": "string"}}}}}
CANCEL = {"type": "function", "function": {"name": "cancel_order", "parameters": {"type": "object"}}}
QUESTIONS = ["Where is my parcel with the blue lamp that I ordered last week?",
             "Could you check whether the refrigerator delivery is on schedule?",
             "Please cancel the toaster order, I found one cheaper elsewhere.",
             "What are your opening hours on public holidays in the winter?"]


def answer(tool: str | None, text: str = "") -> dict:
    message = {"role": "assistant", "content": text or None}
    if tool:
        message["tool_calls"] = [{"id": "c1", "type": "function", "function": {"name": tool, "arguments": '{"id":"7"}'}}]
    return {"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}]}


def row(seq: int, question: str, response: dict, *, tools: list | None, known: bool) -> dict:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": question}]}
    if tools:
        request["tools"] = tools
    return {"seq": seq, "call_id": f"c{seq}", "agent_id": "support-bot", "workload_id": None,
            "timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=seq), "latency_ms": 1.0,
            "human_facing": False, "status": "ok", "model": "gpt-4o",
            "tags": None if known else {"source_format": "gen_ai.messages", "tools_known": False},
            "request_payload": orjson.dumps(request), "response_payload": orjson.dumps(response),
            "payload_key_id": None, "source": "test", "ingested_at": datetime.now(timezone.utc)}


def traffic() -> list[dict]:
    return [row(1, QUESTIONS[0], answer("lookup_order"), tools=[LOOKUP], known=True),  # proxied: tools recorded
            row(2, QUESTIONS[1], answer("lookup_order"), tools=None, known=False),  # traced, tool known elsewhere
            row(3, QUESTIONS[2], answer("cancel_order"), tools=None, known=False),  # traced, tool known nowhere
            row(4, QUESTIONS[3], answer(None, "From 10 to 4."), tools=None, known=False)]  # traced, no tool used


def test_unknown_tools_come_from_the_agents_calls_or_the_call_is_dropped(pii_analyzer):
    result = curate_calls(rows_to_frame(traffic()), pii_analyzer, b"salt")
    assert result.reconciles
    curated = {r["call_id"]: orjson.loads(r["request"]) for r in result.curated.iter_rows(named=True)}
    assert set(curated) == {"c1", "c2", "c4"}
    assert curated["c2"]["tools"] == curated["c4"]["tools"] == [LOOKUP]  # the agent's proxied calls offered it
    (dropped,) = result.dropped.iter_rows(named=True)
    assert dropped["call_id"] == "c3" and dropped["reason"] == "tools_unknown" and dropped["stage"] == "filter"
    assert "cancel_order" in dropped["detail"] and "tools register" in dropped["detail"]


def test_a_registered_tool_list_completes_them(pii_analyzer):
    result = curate_calls(rows_to_frame(traffic()), pii_analyzer, b"salt", tools=[LOOKUP, CANCEL])
    assert result.dropped.height == 0 and result.curated.height == 4
    requests = {r["call_id"]: orjson.loads(r["request"]) for r in result.curated.iter_rows(named=True)}
    assert requests["c3"]["tools"] == [LOOKUP, CANCEL]
    assert requests["c1"]["tools"] == [LOOKUP]  # a call that recorded its tools keeps them


def test_an_agent_without_known_tools_keeps_calls_that_use_none(pii_analyzer):
    rows = [r for r in traffic() if r["seq"] in (3, 4)]
    result = curate_calls(rows_to_frame(rows), pii_analyzer, b"salt")
    assert result.curated["call_id"].to_list() == ["c4"] and "tools" not in orjson.loads(result.curated["request"][0])
    assert result.reason_counts == {"tools_unknown": 1}


def test_tools_register_cli_and_curate_agent(embedded_home: Path, tmp_path: Path):
    path = tmp_path / "tools.json"
    path.write_text(orjson.dumps({"tools": [LOOKUP, CANCEL["function"]]}).decode())  # a bare function too
    result = CliRunner().invoke(app, ["tools", "register", "--agent", "support-bot", str(path)])
    assert result.exit_code == 0, result.output
    assert "registered 2 tool(s)" in result.stdout
    lake = Lake(Settings().resolved_lake_url)
    assert registered_tools(lake, "support-bot") == [LOOKUP, CANCEL]
    lake.append(RAW_TABLE, "support-bot", rows_to_frame(traffic()), 1, 4)
    done = curate_agent(lake, "support-bot", CurationConfig(workers=1), b"salt", tmp_path / "q")
    assert done.result.curated.height == 4 and lake.read(CURATED_TABLE, "support-bot").height == 4
    assert lake.read(DROPPED_TABLE, "support-bot").height == 0

    bad = tmp_path / "bad.json"
    bad.write_text('[{"type": "function", "function": {"description": "no name"}}]')
    refused = CliRunner().invoke(app, ["tools", "register", "--agent", "support-bot", str(bad)])
    assert refused.exit_code == 2 and "name" in refused.stderr


@pytest.mark.parametrize(("text", "error"), [("nope", "not JSON"), ("[]", "non-empty"),
                                            (orjson.dumps([LOOKUP, LOOKUP]).decode(), "twice")])
def test_bad_tool_lists_are_refused_with_the_reason(text: str, error: str):
    with pytest.raises(ToolListError, match=error):
        parse_tool_list(text)
