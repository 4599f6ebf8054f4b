"""Which calls are not training material: human-facing, failed, and duplicates (exact or near)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import orjson
from datasketch import LeanMinHash, MinHash, MinHashLSH

_SPACES = re.compile(r"\s+")
_WORDS = re.compile(r"\w+")


def failure_reason(response: dict[str, Any]) -> str | None:
    """`failed_error`, `failed_empty` or `failed_truncated` for a failed call, else None."""
    if "error" in response:
        return "failed_error"
    choices = response.get("choices") or []
    if not choices:
        return "failed_empty"
    choice = choices[0]
    message = choice.get("message") or {}
    if choice.get("finish_reason") == "length":
        return "failed_truncated"
    content = message.get("content")
    text = content if isinstance(content, str) else orjson.dumps(content).decode() if content else ""
    if not text.strip() and not message.get("tool_calls"):
        return "failed_empty"
    return None


def _normal(text: Any) -> str:
    if not isinstance(text, str):
        text = orjson.dumps(text, option=orjson.OPT_SORT_KEYS).decode() if text is not None else ""
    return _SPACES.sub(" ", text).strip().lower()


def _canonical_arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return _normal(arguments)
    return arguments


def _message_key(message: dict[str, Any]) -> list[Any]:
    calls = [[c.get("function", {}).get("name"), _canonical_arguments(c.get("function", {}).get("arguments"))]
             for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    return [message.get("role"), _normal(message.get("content")), calls]


def content_hash(request: dict[str, Any], response: dict[str, Any]) -> str:
    """A hash of what a call said, blind to ids, timestamps, usage, whitespace and case."""
    tools = sorted(t.get("function", {}).get("name", "") for t in request.get("tools") or [] if isinstance(t, dict))
    answers = [_message_key(c.get("message") or {}) for c in response.get("choices") or [] if isinstance(c, dict)]
    key = [[_message_key(m) for m in request.get("messages") or [] if isinstance(m, dict)], tools, answers]
    return hashlib.blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def answer_text(response: dict[str, Any]) -> str:
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") or {}
    calls = [[c.get("function", {}).get("name"), c.get("function", {}).get("arguments")]
             for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    return _normal(message.get("content")) + (" " + orjson.dumps(calls).decode() if calls else "")


def _shingles(text: str, size: int = 3) -> list[bytes]:
    words = _WORDS.findall(text.lower())
    if len(words) < size:
        return [" ".join(words).encode()]
    return [" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)]


def near_duplicates(texts: Sequence[str], threshold: float = 0.9, num_perm: int = 128, seed: int = 1
                    ) -> dict[int, int]:
    """{index: index of the earlier text it nearly duplicates}, by MinHash LSH on word 3-shingles."""
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    # LSH finds candidates (its banding needs a threshold below ~0.95); the estimate decides.
    lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=num_perm)
    template = MinHash(num_perm=num_perm, seed=seed)
    permutations, scheme = template.permutations, template.scheme  # computed once, shared
    kept: dict[str, LeanMinHash] = {}
    duplicates: dict[int, int] = {}
    for index, text in enumerate(texts):
        minhash = MinHash(num_perm=num_perm, seed=seed, permutations=permutations, scheme=scheme)
        minhash.update_batch(_shingles(text))
        lean = LeanMinHash(minhash)
        match = next((int(c) for c in lsh.query(lean) if kept[c].jaccard(lean) >= threshold), None)
        if match is not None:
            duplicates[index] = match
        else:
            key = str(index)
            kept[key] = lean
            lsh.insert(key, lean)
    return duplicates
