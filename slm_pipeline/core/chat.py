"""Reading OpenAI chat-completions payloads: the parts every step looks at."""

from __future__ import annotations

import hashlib
from typing import Any


def latest_user_turn(request: dict[str, Any]) -> str:
    """The text of the last `user` message (text parts joined), or ''."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def system_fingerprint(request: dict[str, Any]) -> str | None:
    """A short hash of the first system (or developer) prompt; None when there is none."""
    for message in request.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            return hashlib.blake2b(str(message.get("content")).encode(), digest_size=8).hexdigest()
    return None


def offered_tools(request: dict[str, Any]) -> list[str]:
    """Names of the tools offered, sorted."""
    return sorted({t.get("function", {}).get("name", "") for t in request.get("tools") or [] if isinstance(t, dict)})


def called_tools(response: dict[str, Any]) -> list[str]:
    """Names of the tools the first choice called, in order."""
    message = (response.get("choices") or [{}])[0].get("message") or {}
    return [c.get("function", {}).get("name", "") for c in message.get("tool_calls") or [] if isinstance(c, dict)]
