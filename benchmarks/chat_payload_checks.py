"""The gateway's quick checks of chat payloads against the pydantic models they stand in front of.

    python benchmarks/chat_payload_checks.py [--calls 2000] [--repeat 5]

On demo-agent calls (requests with system prompt and tools, the teacher's answers), side by side
in this process: CPU time per payload of `ChatRequest.model_validate_json` against the gateway's
`chat_fields` (every request on the gateway's path), and of the `Response` model against
`response_kind` (every answer, in the call log's writer), best of `--repeat` runs each, and the
ratio. Both sides decide the same (slm_pipeline_tests/test_gateway_chat_payloads.py), so only time is compared.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson
from pydantic import TypeAdapter

from slm_pipeline.core.demo import generate
from slm_pipeline.core.records import ChatRequest, Response
from slm_pipeline.gateway.chat_payloads import chat_fields, response_kind


def best_of(repeat: int, check: Callable[[bytes], object], payloads: list[bytes]) -> float:
    """The least CPU time per payload (µs) over `repeat` passes."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for payload in payloads:
            check(payload)
        best = min(best, time.process_time() - started)
    return best / len(payloads) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    responses_model: TypeAdapter[object] = TypeAdapter(Response)
    requests, answers = [], []
    for call in generate(args.calls, seed=3):
        request, response = orjson.dumps(call.record["request"]), orjson.dumps(call.record["response"])
        try:
            ChatRequest.model_validate_json(request)
            responses_model.validate_json(response)
        except ValueError:
            continue  # the demo's deliberately broken calls: an error path, not the common one
        requests.append(request)
        answers.append(response)
    print(f"{len(requests):,} demo calls (requests {sum(map(len, requests)) / len(requests):,.0f} bytes, "
          f"answers {sum(map(len, answers)) / len(answers):,.0f} bytes on average), best of {args.repeat}\n")
    print(f"{'payload':<9} | {'pydantic us':>11} | {'quick check us':>14} | {'ratio':>5}")
    for name, baseline, quick, payloads in [
            ("request", ChatRequest.model_validate_json, chat_fields, requests),
            ("answer", responses_model.validate_json, response_kind, answers)]:
        slow, fast = best_of(args.repeat, baseline, payloads), best_of(args.repeat, quick, payloads)
        print(f"{name:<9} | {slow:>11.1f} | {fast:>14.1f} | {slow / fast:>4.1f}x")


if __name__ == "__main__":
    main()
