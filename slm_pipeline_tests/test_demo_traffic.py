from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from slm_pipeline.core.demo import default_labels_path, generate, write_demo_traffic
from slm_pipeline.core.records import CallRecord, call_id_of


@pytest.fixture(scope="module")
def calls():
    return list(generate(3000, seed=11))


def _texts(record: dict) -> tuple[str, str]:
    """(every message content, every tool-call argument string) of a record."""
    messages = record["request"]["messages"]
    contents = " ".join(str(m.get("content") or "") for m in messages)
    arguments = []
    for choice in record["response"].get("choices", []):
        for tool_call in choice["message"].get("tool_calls") or []:
            arguments.append(tool_call["function"]["arguments"])
    return contents, " ".join(arguments)


def test_same_seed_same_bytes_other_seed_other_traffic(tmp_path: Path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_demo_traffic(a, 200, seed=5)
    write_demo_traffic(b, 200, seed=5)
    write_demo_traffic(c, 200, seed=6)
    assert a.read_bytes() == b.read_bytes()
    assert default_labels_path(a).read_bytes() == default_labels_path(b).read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_agents_and_recurring_task_types_with_many_phrasings(calls):
    agents = {c.agent_id for c in calls}
    assert len(agents) >= 3
    tasks = Counter(c.task_type for c in calls if not c.human_facing)
    assert len(tasks) >= 10
    users = defaultdict(set)
    for c in calls:
        users[c.task_type].add(c.record["request"]["messages"][-1]["content"])
    for task, count in tasks.items():
        assert count >= 40, task
        assert len(users[task]) >= 0.8 * count, f"{task} repeats its phrasings"
    systems = {c.agent_id: {c.record["request"]["messages"][0]["content"]} for c in calls}
    assert len({s for v in systems.values() for s in v}) >= 3


def test_answer_kinds_tool_calls_json_and_text(calls):
    kinds = Counter()
    for c in calls:
        if "choices" not in c.record["response"] or c.variant == "failed":
            continue
        message = c.record["response"]["choices"][0]["message"]
        if message.get("tool_calls"):
            kinds["tool_call"] += 1
            orjson.loads(message["tool_calls"][0]["function"]["arguments"])
        elif message["content"].startswith("{"):
            kinds["json"] += 1
            orjson.loads(message["content"])
        else:
            kinds["text"] += 1
    assert all(kinds[k] > 100 for k in ("tool_call", "json", "text")), kinds


PII = {
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),
    "phone": re.compile(r"(\+?1?[-. (]*\d{3}[-. )]*\d{3}[-. ]*\d{4})"),
    "card": re.compile(r"\b\d{13,19}\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b"),
    "api_key": re.compile(r"\b(sk-proj-|sk_live_|ghp_|AKIA)[A-Za-z0-9]{16,}"),
    "address": re.compile(r"\d+ [A-Z][a-z]+ (Street|Avenue|Road|Lane|Drive|Court|Place|Way|Parks?|Mill|Isle|"
                          r"Ways|Stream|Walk|Ville|Terrace|Trail|Brooks?|Hills?|Ports?|Ridge|Springs?|"
                          r"Views?|Village|Loop|Crossing|[A-Z][a-z]+)"),
}


def test_personal_data_and_secrets_in_prompts_and_tool_arguments(calls):
    in_prompt, in_args = Counter(), Counter()
    for c in calls:
        prompt, args = _texts(c.record)
        for kind, pattern in PII.items():
            in_prompt[kind] += bool(pattern.search(prompt))
            in_args[kind] += bool(pattern.search(args))
    for kind in PII:
        assert in_prompt[kind] >= 20, (kind, in_prompt)
    for kind in ("email", "iban", "api_key", "address"):
        assert in_args[kind] >= 20, (kind, in_args)
    names = sum('"guest_name"' in _texts(c.record)[1] for c in calls)
    assert names >= 50


def test_production_realities(calls):
    variants = Counter(c.variant for c in calls)
    assert variants["failed"] >= 50 and variants["retry"] >= 50 and variants["log_duplicate"] >= 10
    failures = Counter()
    for c in (c for c in calls if c.variant == "failed"):
        response = c.record["response"]
        if "error" in response:
            failures["error"] += 1
        elif response["choices"][0]["finish_reason"] == "length":
            failures["truncated"] += 1
        elif response["choices"][0]["message"]["content"] == "":
            failures["empty"] += 1
    assert all(failures[k] >= 5 for k in ("error", "truncated", "empty")), failures
    assert sum(c.human_facing for c in calls) >= 100
    assert all(c.record.get("human_facing") is True for c in calls if c.human_facing)
    multi_turn = [c for c in calls if any(m["role"] == "tool" for m in c.record["request"]["messages"])]
    assert len(multi_turn) >= 200
    retries = [c for c in calls if c.variant == "retry"]
    originals = {(orjson.dumps(c.record["request"]), orjson.dumps(c.record["response"])): c.call_id
                 for c in calls if c.variant == "ok"}
    for retry in retries:
        key = (orjson.dumps(retry.record["request"]), orjson.dumps(retry.record["response"]))
        assert originals.get(key) not in (None, retry.call_id)  # identical call, distinct call id


def test_flywheel_style_fields_appear(calls):
    records = [c.record for c in calls]
    assert sum("client_id" in r for r in records) >= 100
    assert sum(isinstance(r["timestamp"], int) for r in records) >= 200
    assert sum("call_id" not in r for r in records) >= 100


def test_every_record_is_valid_and_labels_cover_every_call(tmp_path: Path):
    out = tmp_path / "t.jsonl"
    write_demo_traffic(out, 1000, seed=3)
    ids = set()
    for line in out.read_bytes().splitlines():
        raw = orjson.loads(line)
        ids.add(call_id_of(CallRecord.model_validate(raw), raw))
    with default_labels_path(out).open() as handle:
        labels = list(csv.DictReader(handle))
    assert {row["call_id"] for row in labels} == ids and len(labels) == len(ids)
    assert {row["variant"] for row in labels} == {"ok", "failed", "retry"}


def test_the_general_assistant_looks_like_a_real_multi_tool_agent():
    from slm_pipeline.core.demo import demo_agents
    from slm_pipeline.core.demo.assistant import AGENT_ID, SUITES, assistant_suites, suite_of

    assert 6 <= len(SUITES) <= 10 and all(5 <= len(functions) <= 20 for _, functions in SUITES.values())
    assistant = list(generate(1300, seed=0, agents=assistant_suites()))
    assert {c.agent_id for c in assistant} == {AGENT_ID}
    ok = [c for c in assistant if c.variant == "ok"]
    functions = Counter(c.task_type for c in ok)
    suites = Counter(suite_of(t) for t in functions.elements())
    # labels give both levels; functions are called rarely, suites often
    assert len(suites) == len(SUITES) and len(functions) == sum(len(f) for _, f in SUITES.values())
    assert all(t.count(".") == 2 for t in functions)
    assert min(suites.values()) >= 100 and 10 <= min(functions.values()) and max(functions.values()) <= 40
    # one system prompt per suite, each offering only its suite's tools; multi-turn histories with tool results
    prompt_of, tools_of = defaultdict(set), defaultdict(set)
    with_history = 0
    for call in ok:
        request = call.record["request"]
        suite = suite_of(call.task_type)
        prompt_of[suite].add(request["messages"][0]["content"])
        tools_of[suite].add(tuple(t["function"]["name"] for t in request["tools"]))
        with_history += any(m["role"] == "tool" for m in request["messages"])
    assert all(len(p) == 1 for p in prompt_of.values()) and len(set().union(*prompt_of.values())) == len(SUITES)
    assert all(len(t) == 1 for t in tools_of.values())
    assert 0.35 <= with_history / len(ok) <= 0.65
    # the default demo keeps its three agents; the assistant is added on request
    assert {a.agent_id for a in demo_agents()} == {"support-bot", "travel-planner", "data-analyst"}
    assert AGENT_ID in {a.agent_id for a in demo_agents(assistant=True)}
