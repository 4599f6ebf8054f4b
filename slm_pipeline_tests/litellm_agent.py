"""An agent calling through LiteLLM (`litellm.completion` against the fake upstream), whose logging callback
writes each call's StandardLoggingPayload as a JSON line, as LiteLLM hands it to every logger; run as a
subprocess by test_trace_logs.py.

    python -m slm_pipeline_tests.litellm_agent UPSTREAM_BASE_URL OUT.jsonl
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    upstream, out = sys.argv[1], sys.argv[2]
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no download of the cost map
    import litellm
    import orjson
    from litellm.integrations.custom_logger import CustomLogger

    from slm_pipeline_tests.instrumented_agent import CALLS

    payloads: list[dict] = []

    class Keep(CustomLogger):
        def log_success_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001, ANN201
            payloads.append(kwargs["standard_logging_object"])

        def log_failure_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001, ANN201
            payloads.append(kwargs["standard_logging_object"])

    litellm.callbacks = [Keep()]
    for call in CALLS:
        answer = litellm.completion(model="openai/gpt-4o", api_base=upstream, api_key="sk-upstream",
                                    metadata={"user_api_key_alias": "support-bot"}, **call)
        if call.get("stream"):
            for _ in answer:
                pass
    deadline = time.monotonic() + 30
    while len(payloads) < len(CALLS) and time.monotonic() < deadline:  # streamed calls log from a thread
        time.sleep(0.1)
    with open(out, "wb") as handle:
        for payload in payloads:
            handle.write(orjson.dumps(payload, default=str) + b"\n")


if __name__ == "__main__":
    main()
