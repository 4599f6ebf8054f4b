"""S6 metrics: how closely a model's answers agree with the teacher's, call by call.

Each test call is scored on its own (`score_call`), then summed up per model (`summarise`):

  tool calls   function_name_accuracy            same functions, in the same order
               function_name_and_args_accuracy   and every argument equal as parsed JSON
                                                 (key order ignored, 12 == 12.0)
               schema_valid_rate                 the arguments satisfy the tool's JSON schema
  JSON         json_valid_rate, exact_match      the whole object equal as parsed JSON
  free text    exact_match, token_f1, embedding_similarity (cosine of sentence embeddings)
  all          agreement (the per-call verdict promotion counts), valid_rate,
               latency_ms_p50/p95 and tokens_per_s measured here, and judge_agreement
               when an LLM judge is configured (`judge.py`).

`agreement` is what "the SLM answered as the LLM would" means for the task: name and arguments
for tool calls, the object for JSON, token F1 >= `text_agreement_f1` for free text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slm_pipeline.core.toolcalls import ParsedAnswer, parse_answer, score_answer

MAIN_METRIC = {"tool_call": "function_name_and_args_accuracy", "json": "exact_match", "text": "token_f1"}
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class CallScore:
    call_id: str
    valid: bool  # parsed in the task's shape
    name_match: bool
    exact_match: bool  # names and arguments / the object / the text
    schema_valid: bool | None  # tool calls: every call names a known tool and its arguments fit its schema
    token_f1: float
    agreement: bool
    latency_ms: float | None = None
    output_tokens: int | None = None
    similarity: float | None = None  # free text, when an embedder is given
    error: str | None = None  # why it did not agree
    judged: bool | None = None  # the LLM judge's verdict, when one is configured and answered


def tool_schemas(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Function name -> JSON schema of its parameters, from OpenAI tool definitions."""
    schemas = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            schemas[function["name"]] = function.get("parameters") or {"type": "object"}
    return schemas


def schema_errors(answer: ParsedAnswer, schemas: dict[str, dict[str, Any]]) -> list[str]:
    """Why the answer's tool calls would not run: unknown tool, or arguments against its schema."""
    from jsonschema import Draft202012Validator

    errors = []
    for call in answer.tool_calls:
        schema = schemas.get(call.name)
        if schema is None:
            errors.append(f"{call.name} is not one of the request's tools")
            continue
        for error in Draft202012Validator(schema).iter_errors(call.arguments):
            where = ".".join(str(p) for p in error.absolute_path) or "arguments"
            errors.append(f"{call.name}.{where}: {_violation(error)}")
    return errors


def _violation(error: Any) -> str:
    """What the schema wanted, from the schema's side only: jsonschema's own messages quote the argument
    value, which may be personal data, and these reasons end up in logs and the gateway's tags."""
    rule, wanted = error.validator, error.validator_value
    if rule == "required":
        return error.message  # names the schema's property, not a value
    if rule == "type":
        return f"must be of type {wanted}"
    if rule == "enum":
        return f"must be one of {json.dumps(wanted)[:120]}"
    if rule == "additionalProperties":
        return "has a property its schema does not allow"
    return f"violates {rule}={json.dumps(wanted, default=str)[:80]}"


def token_f1(predicted: str, reference: str) -> float:
    """SQuAD-style token F1 (lower-cased words)."""
    got, want = _WORD.findall(predicted.lower()), _WORD.findall(reference.lower())
    if not got and not want:
        return 1.0
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def score_call(call_id: str, output: str, completion: str, answer_kind: str, schemas: dict[str, dict[str, Any]],
               *, text_agreement_f1: float = 0.8, latency_ms: float | None = None,
               output_tokens: int | None = None) -> CallScore:
    """Score one model output against the teacher's answer (`completion`, in the SLM format)."""
    expected = parse_answer(completion, answer_kind)  # type: ignore[arg-type]
    got = parse_answer(output, answer_kind)  # type: ignore[arg-type]
    score = score_answer(got, expected)
    schema_valid = None
    error = got.error
    if answer_kind == "tool_call":
        problems = schema_errors(got, schemas) if got.kind == "tool_call" else ["no tool call"]
        schema_valid = not problems
        if score.valid and not score.exact_match:
            error = "wrong tool" if not score.name_match else "wrong arguments"
            error += f" ({problems[0]})" if problems else ""
    f1 = token_f1(str(got.value if got.kind in ("text", "json") else output), str(expected.value or completion))
    if answer_kind == "text":
        agreement = score.valid and (score.exact_match or f1 >= text_agreement_f1)
    else:
        agreement = score.exact_match
    if not agreement and error is None:
        error = "different text" if answer_kind == "text" else "different object"
    return CallScore(call_id, score.valid, score.name_match, score.exact_match, schema_valid, f1, agreement,
                     latency_ms, output_tokens, error=None if agreement else error)


def _rate(values: list[bool | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def summarise(scores: list[CallScore], answer_kind: str) -> dict[str, float | None]:
    """The model's metrics over its scored calls (names as in the module docstring)."""
    n = len(scores)
    metrics: dict[str, float | None] = {"examples": float(n), "agreement": _rate([s.agreement for s in scores]),
                                        "agreements": float(sum(s.agreement for s in scores)),
                                        "valid_rate": _rate([s.valid for s in scores])}
    if answer_kind == "tool_call":
        metrics |= {"function_name_accuracy": _rate([s.name_match for s in scores]),
                    "function_name_and_args_accuracy": _rate([s.exact_match for s in scores]),
                    "schema_valid_rate": _rate([s.schema_valid for s in scores])}
    elif answer_kind == "json":
        metrics |= {"json_valid_rate": _rate([s.valid for s in scores]),
                    "exact_match": _rate([s.exact_match for s in scores])}
    else:
        similarities = [s.similarity for s in scores if s.similarity is not None]
        metrics |= {"exact_match": _rate([s.exact_match for s in scores]),
                    "token_f1": float(np.mean([s.token_f1 for s in scores])) if n else None,
                    "embedding_similarity": float(np.mean(similarities)) if similarities else None}
    verdicts = [s.judged for s in scores if s.judged is not None]
    if verdicts:
        metrics["judge_agreement"] = sum(verdicts) / len(verdicts)
    latencies = [s.latency_ms for s in scores if s.latency_ms is not None]
    tokens = [s.output_tokens for s in scores if s.output_tokens is not None]
    if latencies:
        metrics |= {"latency_ms_p50": float(np.percentile(latencies, 50)),
                    "latency_ms_p95": float(np.percentile(latencies, 95))}
        if tokens and len(tokens) == len(latencies) and sum(latencies) > 0:
            metrics["tokens_per_s"] = sum(tokens) / (sum(latencies) / 1000)
    return metrics


def score_rows(scores: list[CallScore]) -> list[dict[str, Any]]:
    return [asdict(s) for s in scores]
