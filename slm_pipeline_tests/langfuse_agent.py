"""An agent logged to Langfuse by its OpenAI integration (`langfuse.openai`), whose SDK exports OpenTelemetry
spans; run as a subprocess by test_trace_logs.py (the integration patches `openai` process-wide).

    python -m slm_pipeline_tests.langfuse_agent UPSTREAM_BASE_URL LANGFUSE_HOST
"""

from __future__ import annotations

import os
import sys

from slm_pipeline_tests.instrumented_agent import CALLS


def main() -> None:
    upstream, host = sys.argv[1], sys.argv[2]
    os.environ.update(LANGFUSE_PUBLIC_KEY="pk-lf-test", LANGFUSE_SECRET_KEY="sk-lf-test", LANGFUSE_HOST=host,
                      LANGFUSE_BASE_URL=host)
    from langfuse import get_client
    from langfuse.openai import OpenAI

    client = OpenAI(base_url=upstream, api_key="sk-upstream", max_retries=0)
    for call in CALLS:
        answer = client.chat.completions.create(model="gpt-4o", **call)
        if call.get("stream"):
            for _ in answer:
                pass
    get_client().flush()


if __name__ == "__main__":
    main()
