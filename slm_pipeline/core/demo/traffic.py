"""Demo traffic: canonical call records of three agents, with the mess of production logs.

Deterministic by seed. Besides clean calls it writes what real logs carry:
personal data and secrets in prompts and tool arguments, human-facing chat turns,
failed calls (error objects, empty and truncated answers), an agent retrying the
identical call, log lines shipped twice, multi-turn histories with tool results,
Data-Flywheel-style fields (`client_id`, epoch timestamps) and records without a
`call_id`. The true task type of every call goes to a separate labels file that
only tests and benchmarks read.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from faker import Faker

from slm_pipeline.core.demo.agents import AGENTS, Agent, JsonAnswer, Task, TextAnswer, ToolAnswer
from slm_pipeline.core.records import CallRecord, call_id_of

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
LABEL_COLUMNS = ["call_id", "agent_id", "task_type", "human_facing", "variant"]


@dataclass(frozen=True)
class Realities:
    """How often production mess appears in the demo traffic (probabilities per call)."""

    failed: float = 0.04  # error object, empty or truncated answer
    retry: float = 0.04  # the agent sends the identical call again (distinct call, same content)
    log_duplicate: float = 0.01  # the log shipper writes the same record twice
    history: float = 0.25  # earlier turns and a tool result precede the user turn
    no_call_id: float = 0.10
    client_id_alias: float = 0.10
    epoch_timestamp: float = 0.20


@dataclass(frozen=True)
class DemoCall:
    record: dict[str, Any]
    call_id: str
    agent_id: str
    task_type: str
    human_facing: bool
    variant: str  # ok | failed | retry | log_duplicate


@dataclass
class DemoSummary:
    records: int = 0
    by_agent: Counter[str] = field(default_factory=Counter)
    by_task: Counter[str] = field(default_factory=Counter)
    by_variant: Counter[str] = field(default_factory=Counter)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _assistant_message(answer: ToolAnswer | JsonAnswer | TextAnswer, rng: random.Random) -> dict[str, Any]:
    if isinstance(answer, ToolAnswer):
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{
                "id": f"call_{_hex(rng, 24)}",
                "type": "function",
                "function": {"name": answer.name, "arguments": orjson.dumps(answer.arguments).decode()},
            }],
        }
    if isinstance(answer, JsonAnswer):
        return {"role": "assistant", "content": orjson.dumps(answer.value).decode()}
    return {"role": "assistant", "content": answer.text}


def _history(agent: Agent, fake: Faker, rng: random.Random) -> list[dict[str, Any]]:
    """An earlier exchange: a user turn, the tool call it caused, the tool's result, a short reply."""
    earlier = rng.choice([t for t in agent.tasks if t.kind == "tool_call"])
    text, answer = earlier.make(fake, rng)
    assert isinstance(answer, ToolAnswer)
    call = _assistant_message(answer, rng)
    result_of = agent.history_tools.get(answer.name)
    result = result_of(fake, rng) if result_of else {"ok": True}
    return [
        {"role": "user", "content": text},
        call,
        {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": orjson.dumps(result).decode()},
        {"role": "assistant", "content": "Done. Anything else?"},
    ]


def _usage(messages: list[dict[str, Any]], reply: dict[str, Any]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 8
    completion = len(orjson.dumps(reply)) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _failure(rng: random.Random, reply: dict[str, Any], teacher: str) -> tuple[dict[str, Any] | None, str]:
    """A failed response: an error object (returned as is), or an empty or truncated reply."""
    kind = rng.choice(["rate_limit", "server_error", "empty", "truncated"])
    if kind == "rate_limit":
        return {"error": {"message": f"Rate limit reached for {teacher}", "type": "rate_limit_error",
                          "code": "rate_limit_exceeded"}}, "length"
    if kind == "server_error":
        return {"error": {"message": "The server had an error while processing your request.",
                          "type": "server_error", "code": 500}}, "length"
    if kind == "empty":
        reply.clear()
        reply.update({"role": "assistant", "content": ""})
        return None, "stop"
    text = reply.get("content") or orjson.dumps(reply.get("tool_calls")).decode()
    reply.clear()
    reply.update({"role": "assistant", "content": text[: max(1, len(text) // 2)]})
    return None, "length"


def _record(agent: Agent, task: Task, when: datetime, fake: Faker, rng: random.Random,
            realities: Realities) -> tuple[dict[str, Any], bool]:
    user_text, answer = task.make(fake, rng)
    messages: list[dict[str, Any]] = [{"role": "system", "content": task.system or agent.system}]
    if task.system is None and rng.random() < (realities.history if agent.history is None else agent.history):
        messages += _history(agent, fake, rng)
    messages.append({"role": "user", "content": user_text})
    request: dict[str, Any] = {"model": agent.teacher, "messages": messages,
                               "temperature": rng.choice([0.0, 0.0, 0.2]), "max_tokens": 512}
    if task.system is None:
        request["tools"] = agent.tools
        request["tool_choice"] = "auto"

    reply = _assistant_message(answer, rng)
    finish = "tool_calls" if isinstance(answer, ToolAnswer) else "stop"
    failed = rng.random() < realities.failed
    response: dict[str, Any] | None = None
    if failed:
        response, finish = _failure(rng, reply, agent.teacher)
    if response is None:
        response = {
            "id": f"chatcmpl-{_hex(rng, 29)}", "object": "chat.completion", "created": int(when.timestamp()),
            "model": agent.teacher,
            "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
            "usage": _usage(messages, reply),
        }
    record: dict[str, Any] = {
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "agent_id": agent.agent_id,
        "workload_id": f"{agent.agent_id}.{task.workload_id}",
        "call_id": f"{agent.agent_id[:3]}-{_hex(rng, 20)}",
        "latency_ms": round(rng.lognormvariate(6.6, 0.5), 1),
        "human_facing": task.human_facing if (task.human_facing or rng.random() < 0.7) else None,
        "tags": {"env": "prod", "trace_id": _hex(rng, 16)},
        "request": request,
        "response": response,
    }
    if record["human_facing"] is None:
        del record["human_facing"]
    return record, failed


def _flywheel_style(record: dict[str, Any], when: datetime, rng: random.Random, realities: Realities) -> None:
    """Some records arrive in the NVIDIA Data Flywheel shape: `client_id`, epoch seconds, no `call_id`."""
    if rng.random() < realities.client_id_alias:
        record["client_id"] = record.pop("agent_id")
    if rng.random() < realities.epoch_timestamp:
        record["timestamp"] = int(when.timestamp())
    if rng.random() < realities.no_call_id:
        del record["call_id"]


def _call_id(record: dict[str, Any]) -> str:
    if "call_id" in record:
        return record["call_id"]
    return call_id_of(CallRecord.model_validate(record), record)


def demo_agents(assistant: bool = False) -> list[Agent]:
    """The demo's agents: support, travel and analytics, and with `assistant` the general assistant's eight
    tool suites (one agent, `general-assistant`)."""
    from slm_pipeline.core.demo.assistant import assistant_suites

    return [*AGENTS, *assistant_suites(1.0)] if assistant else list(AGENTS)


def generate(calls: int, seed: int = 0, realities: Realities = Realities(), agents: list[Agent] | None = None
             ) -> Iterator[DemoCall]:
    """Yield `calls` records (log lines) of demo traffic (of `agents`, default the three demo agents)."""
    agents = AGENTS if agents is None else agents
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    when = START
    emitted = 0
    agent_weights = [a.weight for a in agents]
    while emitted < calls:
        when += timedelta(milliseconds=int(rng.expovariate(1 / 45_000)) + 1)
        agent = rng.choices(agents, weights=agent_weights)[0]
        task = rng.choices(agent.tasks, weights=[t.weight for t in agent.tasks])[0]
        record, failed = _record(agent, task, when, fake, rng, realities)
        _flywheel_style(record, when, rng, realities)
        call = DemoCall(record, _call_id(record), agent.agent_id, task.name, task.human_facing,
                        "failed" if failed else "ok")
        yield call
        emitted += 1
        if emitted < calls and rng.random() < realities.log_duplicate:
            yield DemoCall(record, call.call_id, agent.agent_id, task.name, task.human_facing, "log_duplicate")
            emitted += 1
        if emitted < calls and not failed and rng.random() < realities.retry:
            when += timedelta(milliseconds=rng.randrange(500, 5000))
            again = dict(record, timestamp=when.isoformat().replace("+00:00", "Z"),
                         call_id=f"{agent.agent_id[:3]}-{_hex(rng, 20)}")
            yield DemoCall(again, again["call_id"], agent.agent_id, task.name, task.human_facing, "retry")
            emitted += 1


def write_demo_traffic(out: Path, calls: int = 3000, seed: int = 0, labels: Path | None = None,
                       realities: Realities = Realities(), agents: list[Agent] | None = None) -> DemoSummary:
    """Write `calls` JSONL records to `out` and their true task types to `labels` (CSV)."""
    out = Path(out)
    labels = Path(labels) if labels else default_labels_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels.parent.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary()
    seen: set[str] = set()
    with out.open("wb") as records, labels.open("w", newline="") as label_file:
        writer = csv.writer(label_file)
        writer.writerow(LABEL_COLUMNS)
        for call in generate(calls, seed, realities, agents):
            records.write(orjson.dumps(call.record) + b"\n")
            summary.records += 1
            summary.by_variant[call.variant] += 1
            if call.call_id in seen:
                continue
            seen.add(call.call_id)
            summary.by_agent[call.agent_id] += 1
            summary.by_task[call.task_type] += 1
            writer.writerow([call.call_id, call.agent_id, call.task_type, str(call.human_facing).lower(),
                             call.variant])
    return summary


def default_labels_path(out: Path) -> Path:
    name = out.name.removesuffix(".gz").removesuffix(".jsonl")
    return out.with_name(f"{name}.labels.csv")
