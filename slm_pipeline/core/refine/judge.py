"""An optional LLM judge: does the SLM's answer do what the teacher's did?

Exact agreement is strict (a paraphrased text, an equivalent SQL query, an extra optional argument
all count as misses). When an OpenAI-compatible endpoint is configured, each scored call is also
shown to a judge model, with the task's last user turn (curated: PII already replaced), the
teacher's answer as the reference and the SLM's answer, and it replies whether they are
equivalent. `judge_agreement` is the share of judged calls it says yes to; calls it could not judge
(no answer, unreadable verdict) are left out and counted in `judge_errors`.

The endpoint's key comes from the environment only (`SLM_PIPELINE_JUDGE_API_KEY`).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

JUDGE_SYSTEM = ("You judge whether a candidate answer of an AI agent's step is equivalent to a reference answer "
                "for the same request: same tool and same effect of its arguments, or the same information. "
                'Reply with JSON only: {"equivalent": true or false, "reason": "<one sentence>"}.')
KEY_ENV = "SLM_PIPELINE_JUDGE_API_KEY"


@dataclass(frozen=True)
class JudgeConfig:
    url: str | None = None  # base URL with its /v1; None: no judge
    model: str = "gpt-4o-mini"
    max_calls: int = 50  # judged calls per model evaluated (the first N of the test split)
    timeout_s: float = 60.0


def judge_prompt(request: str, reference: str, candidate: str) -> list[dict[str, str]]:
    user = json.dumps({"request": request, "reference": reference, "candidate": candidate}, ensure_ascii=False)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def _verdict(content: str) -> bool | None:
    text = content.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    equivalent = value.get("equivalent") if isinstance(value, dict) else None
    return equivalent if isinstance(equivalent, bool) else None


def judge(config: JudgeConfig, request: str, reference: str, candidate: str) -> bool | None:
    """The judge's verdict on one call; None when it could not be had (the reason is not fatal)."""
    assert config.url is not None
    body = json.dumps({"model": config.model, "temperature": 0, "messages": judge_prompt(request, reference,
                                                                                         candidate)}).encode()
    headers = {"content-type": "application/json"}
    if os.environ.get(KEY_ENV):
        headers["authorization"] = f"Bearer {os.environ[KEY_ENV]}"
    http = urllib.request.Request(f"{config.url.rstrip('/')}/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(http, timeout=config.timeout_s) as answer:  # noqa: S310 (configured URL)
            completion = json.loads(answer.read())
        content = completion["choices"][0]["message"].get("content") or ""
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return _verdict(content)
