"""Public function-calling traffic: the Berkeley Function Calling Leaderboard's questions as call records.

    from benchmarks.bfcl import bfcl_records, write_jsonl     # or: sys.path.insert(0, "benchmarks"); import bfcl
    records = bfcl_records()                                  # list of this project's import records
    write_jsonl(records, Path("bfcl.jsonl"))

The data comes from the PyPI package `bfcl-eval`: its wheel is fetched once with
`pip download --no-deps` into a cache folder (default `~/.cache/slm-pipeline/bfcl`, or
`$SLM_BFCL_CACHE`) and its `data/` files are read from the wheel; nothing is installed and no
model hub is touched. Only the non-live categories are read (`CATEGORIES`). The categories whose
names start with `live_` or `multi_turn_` are held out for acceptance checks: this module refuses
to read them.

Each question becomes one call: an OpenAI chat request (the user turn, the functions as `tools`,
dots in names turned into underscores as BFCL's own OpenAI handler does, BFCL's type names mapped
to JSON Schema's) and the teacher's response, whose tool calls take the first acceptable value of
each argument from BFCL's `possible_answer` (an argument whose first acceptable value is "absent"
is left out). An `irrelevance` question, which no offered function answers, gets a plain text
answer. No other package of this project is needed here (issues 18 and 19 reuse it).

`possible_answers()` and `acceptable()` score a model's calls as BFCL's AST checker does, where the
teacher's answer above is only one of the accepted ones: any acceptable value of each argument,
strings compared without case, spaces or punctuation, an integer where a float is expected, an
optional argument left out, parallel calls in any order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

CATEGORIES = ("simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
              "irrelevance")
HELD_OUT_PREFIXES = ("live_", "multi_turn_")
PACKAGE = "bfcl-eval"
DEFAULT_CACHE = Path(os.environ.get("SLM_BFCL_CACHE", Path.home() / ".cache" / "slm-pipeline" / "bfcl"))
IRRELEVANT_ANSWER = "None of the functions I have can do that, so I cannot call one for this request."
_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string", "double": "number",
          "long": "integer", "char": "string", "byte": "integer", "short": "integer", "String": "string",
          "Boolean": "boolean", "HashMap": "object", "ArrayList": "array", "Array": "array", "bigint": "integer"}


def download_wheel(cache_dir: Path = DEFAULT_CACHE, version: str | None = None) -> Path:
    """The `bfcl-eval` wheel in `cache_dir`, downloaded with pip (no dependencies) the first time."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("bfcl_eval-*.whl"))
    if version:
        wheels = [w for w in wheels if w.name.startswith(f"bfcl_eval-{version}-")]
    if wheels:
        return wheels[-1]
    spec = f"{PACKAGE}=={version}" if version else PACKAGE
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                           spec, "-d", str(cache_dir)], capture_output=True, text=True)
    wheels = sorted(cache_dir.glob("bfcl_eval-*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(f"`pip download --no-deps {spec}` failed ({done.returncode}): {done.stderr[-2000:]}\n"
                           f"Download the wheel by hand into {cache_dir} (or set SLM_BFCL_CACHE) and rerun.")
    return wheels[-1]


def _check_category(category: str) -> None:
    if category.startswith(HELD_OUT_PREFIXES):
        raise ValueError(f"{category!r} is held out for acceptance checks: it is never read or tuned on")
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; the public ones are {', '.join(CATEGORIES)}")


def _json_lines(wheel: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in wheel.read(name).decode("utf-8").splitlines() if line.strip()]


def load_category(wheel_path: Path, category: str) -> list[tuple[dict[str, Any], list[dict[str, Any]] | None]]:
    """(question entry, ground truth or None for irrelevance) of every question of a public category."""
    _check_category(category)
    with zipfile.ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        question = next(n for n in names if n.endswith(f"/data/BFCL_v4_{category}.json")
                        or n.endswith(f"/data/BFCL_v3_{category}.json"))
        entries = _json_lines(wheel, question)
        answer_name = question.replace("/data/", "/data/possible_answer/")
        answers = {a["id"]: a["ground_truth"] for a in _json_lines(wheel, answer_name)} if answer_name in names else {}
    return [(entry, answers.get(entry["id"])) for entry in entries]


def tool_name(name: str) -> str:
    """BFCL's names hold dots (`math.factorial`); OpenAI's tool names may not, so BFCL writes underscores."""
    return name.replace(".", "_")


def json_schema(value: Any) -> Any:
    """BFCL's parameter schema with JSON Schema's type names (`dict` -> `object`, `float` -> `number`)."""
    if isinstance(value, dict):
        out = {k: json_schema(v) for k, v in value.items()}
        if isinstance(out.get("type"), str):
            out["type"] = _TYPES.get(out["type"], out["type"])
        return out
    if isinstance(value, list):
        return [json_schema(v) for v in value]
    return value


def tools_of(functions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": tool_name(f["name"]), "description": f.get("description", ""),
                                              "parameters": json_schema(f.get("parameters", {}))}}
            for f in functions]


def _first_values(arguments: dict[str, Any]) -> dict[str, Any]:
    """Each argument at its first acceptable value; a nested object's keys likewise (BFCL writes an object's
    acceptable values as an object of lists)."""
    chosen = {}
    for key, accepted in arguments.items():
        accepted = accepted if isinstance(accepted, list) else [accepted]  # a few nested values are bare
        if accepted and accepted[0] != "":  # "" first: the argument may be left out
            first = accepted[0]
            chosen[key] = _first_values(first) if isinstance(first, dict) else first
    return chosen


def first_acceptable(ground_truth: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(function, arguments) of the expected calls, each argument at its first acceptable value."""
    return [(function, _first_values(arguments)) for expected in ground_truth
            for function, arguments in expected.items()]


def to_record(entry: dict[str, Any], ground_truth: list[dict[str, Any]] | None, agent_id: str,
              when: datetime) -> dict[str, Any]:
    """One question as this project's import record (canonical call record, OpenAI payloads)."""
    turns = entry["question"][0] if entry["question"] and isinstance(entry["question"][0], list) else entry["question"]
    messages = [{"role": t["role"], "content": t["content"]} for t in turns]
    request = {"model": "teacher", "messages": messages, "tools": tools_of(entry["function"])}
    if ground_truth:
        calls = [{"id": f"call_{i}", "type": "function",
                  "function": {"name": tool_name(name), "arguments": json.dumps(arguments, ensure_ascii=False)}}
                 for i, (name, arguments) in enumerate(first_acceptable(ground_truth))]
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": IRRELEVANT_ANSWER}, "stop"
    return {
        "timestamp": when.isoformat(), "agent_id": agent_id, "workload_id": entry["id"].rsplit("_", 1)[0],
        "call_id": f"bfcl-{entry['id']}", "human_facing": False, "latency_ms": 800.0,
        "request": request,
        "response": {"id": f"chatcmpl-{entry['id']}", "model": "teacher",
                     "choices": [{"index": 0, "finish_reason": finish, "message": message}]},
    }


def bfcl_records(categories: Iterable[str] = CATEGORIES, cache_dir: Path = DEFAULT_CACHE,
                 agent_id: str | None = "bfcl", version: str | None = None) -> list[dict[str, Any]]:
    """Every question of the public categories as import records. `agent_id=None` gives each category
    its own agent (`bfcl-simple_python`, ...)."""
    wheel = download_wheel(cache_dir, version)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    records = []
    for category in categories:
        for entry, truth in load_category(wheel, category):
            if category != "irrelevance" and not truth:
                continue  # no expected call: nothing to learn from
            when = start + timedelta(seconds=len(records))
            records.append(to_record(entry, truth if category != "irrelevance" else None,
                                     agent_id or f"bfcl-{category}", when))
    return records


def possible_answers(categories: Iterable[str] = CATEGORIES, cache_dir: Path = DEFAULT_CACHE,
                     version: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """BFCL's ground truth (every acceptable value of every argument) by this project's call id."""
    wheel = download_wheel(cache_dir, version)
    return {f"bfcl-{entry['id']}": truth for category in categories if category != "irrelevance"
            for entry, truth in load_category(wheel, category) if truth}


def _standard(value: Any) -> Any:
    """A value as BFCL's checker compares it: strings without spaces, punctuation or case; numbers as floats."""
    if isinstance(value, str):
        return re.sub(r"[ ,./\-_*^]", "", value).lower().replace("'", '"')
    if isinstance(value, bool) or value is None:
        return ("bool", value)  # not a number: True == 1.0 in Python, not in BFCL's type check
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, (list, tuple)):
        return [_standard(v) for v in value]
    if isinstance(value, dict):
        return {k: _standard(v) for k, v in value.items()}
    return value


def _value_ok(value: Any, accepted: list[Any]) -> bool:
    for option in accepted:
        if isinstance(option, dict) and isinstance(value, dict):
            if _arguments_ok(value, option):  # a nested object: each key has its own acceptable values
                return True
        elif option != "" and _standard(value) == _standard(option):
            return True
    return False


def _arguments_ok(arguments: dict[str, Any], expected: dict[str, list[Any]]) -> bool:
    if any(key not in expected for key in arguments):
        return False  # an argument the answer has no place for
    for key, accepted in expected.items():
        accepted = accepted if isinstance(accepted, list) else [accepted]
        if key not in arguments:
            if "" not in accepted:
                return False  # a required argument left out
        elif not _value_ok(arguments[key], accepted):
            return False
    return True


def acceptable(calls: list[tuple[str, dict[str, Any]]], ground_truth: list[dict[str, Any]]) -> bool:
    """Whether the (function, arguments) calls answer a question as BFCL accepts: one call per expected call,
    in any order, each with acceptable values."""
    expected = [(tool_name(name), arguments) for entry in ground_truth for name, arguments in entry.items()]
    if len(calls) != len(expected):
        return False
    left = list(expected)
    for name, arguments in calls:
        match = next((i for i, (want, args) in enumerate(left)
                      if want == name and isinstance(arguments, dict) and _arguments_ok(arguments, args)), None)
        if match is None:
            return False
        left.pop(match)
    return True


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bfcl.jsonl")
    rows = bfcl_records()
    write_jsonl(rows, target)
    print(f"{len(rows)} records -> {target}")
