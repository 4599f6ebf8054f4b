"""A deterministic OpenAI-compatible upstream for load tests, benchmarks and trying the gateway offline.

It answers at once (or after `--delay-ms` plus a random `--jitter-ms`, like a real LLM taking its time) with a tool call to the
request's first tool, else with a short text; with `"stream": true` it sends the same answer as
server-sent events, arguments split across chunks as OpenAI does. Test hooks, by request header:
`x-fake-status: 503` answers that status with an OpenAI error, `x-fake-delay-ms: N` waits N ms, `x-fake-chunk-delay-ms: N` waits
N ms between streamed events,
`x-fake-body: garbage` answers 200 with a body that is not JSON. Asked as the LLM judge of S6's evaluation
(its system prompt), it says two answers are equivalent when they are equal but for whitespace.

    python -m slm_pipeline.gateway.fake_upstream --port 9000 [--delay-ms 50]

It is a raw ASGI app (no framework) so that, in a benchmark, it costs the CPU as little as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import orjson

MODELS = orjson.dumps({"object": "list", "data": [{"id": "fake-llm", "object": "model", "owned_by": "slm_pipeline"}]})


def _judge(request: dict[str, Any]) -> dict[str, Any] | None:
    """Playing the LLM judge of S6's evaluation (`core/refine/judge.py`): equivalent when the two
    answers are equal once whitespace is ignored."""
    messages = request.get("messages") or [{}]
    if not str(messages[0].get("content") or "").startswith("You judge whether"):
        return None
    try:
        case = orjson.loads(messages[-1].get("content") or "")
        same = "".join(str(case["reference"]).split()) == "".join(str(case["candidate"]).split())
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {"role": "assistant", "content": "I cannot read this case."}
    return {"role": "assistant", "content": orjson.dumps({"equivalent": same, "reason": "compared"}).decode()}


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    if (verdict := _judge(request)) is not None:
        return verdict
    tools = request.get("tools") or []
    if tools:
        text = str((request.get("messages") or [{}])[-1].get("content") or "")[:40]
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake_1", "type": "function",
            "function": {"name": tools[0]["function"]["name"], "arguments": orjson.dumps({"query": text}).decode()}}]}
    return {"role": "assistant", "content": "All done."}


def completion(request: dict[str, Any]) -> dict[str, Any]:
    message = _answer(request)
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000,
            "model": request.get("model", "fake-llm"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}}


def stream_events(request: dict[str, Any]) -> list[bytes]:
    """The completion as SSE events (each `data: ...\\n\\n`), ending with `[DONE]`."""
    message = _answer(request)
    head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": request.get("model", "fake-llm")}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None if message.get("tool_calls") else ""}]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        arguments = call["function"]["arguments"]
        third = max(1, len(arguments) // 3)
        deltas.append({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": arguments[i:i + third]}}]}
                   for i in range(0, len(arguments), third)]
    else:
        deltas += [{"content": word} for word in ("All ", "done.")]
    events = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**head, "choices": [{"index": 0, "delta": {},
                                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}]})
    if (request.get("stream_options") or {}).get("include_usage"):
        events.append({**head, "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 7,
                                                        "total_tokens": 49}})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _processing(received: float) -> tuple[bytes, bytes]:
    """OpenAI's `openai-processing-ms` header: the time the upstream spent on the request."""
    return b"openai-processing-ms", f"{(time.perf_counter() - received) * 1000:.3f}".encode()


class FakeUpstream:
    def __init__(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, seed: int = 0) -> None:
        self.delay_ms, self.jitter_ms = delay_ms, jitter_ms
        self.requests = 0
        self._random = random.Random(seed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.requests += 1
        received = time.perf_counter()
        delay = float(headers.get("x-fake-delay-ms", self.delay_ms)) + self._random.uniform(0, self.jitter_ms)
        if delay:
            await asyncio.sleep(delay / 1000)
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            return await self._send(send, 200, MODELS, received=received)
        if not path.endswith("/chat/completions"):
            return await self._send(send, 404, orjson.dumps({"error": {"message": "not found", "type": "not_found"}}),
                                    received=received)
        if "x-fake-status" in headers:
            status = int(headers["x-fake-status"])
            return await self._send(send, status, orjson.dumps(
                {"error": {"message": f"fake upstream failure {status}", "type": "server_error", "code": status}}),
                received=received)
        if headers.get("x-fake-body") == "garbage":
            return await self._send(send, 200, b"<html>not json</html>", b"text/html", received=received)
        request = orjson.loads(body)
        if not request.get("stream"):
            return await self._send(send, 200, orjson.dumps(completion(request)), received=received)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), _processing(received)]})
        pause = float(headers.get("x-fake-chunk-delay-ms", 0)) / 1000
        for event in stream_events(request):
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if pause:
                await asyncio.sleep(pause)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _send(send: Any, status: int, body: bytes, media_type: bytes = b"application/json", *,
                    received: float) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", media_type), (b"content-length", str(len(body)).encode()),
                                _processing(received)]})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="simulated LLM time per call")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="plus a uniform random 0..J ms per call")
    args = parser.parse_args()
    uvicorn.run(FakeUpstream(args.delay_ms, args.jitter_ms), host=args.host, port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
