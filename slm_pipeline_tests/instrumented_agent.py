"""An agent traced by a real OpenTelemetry instrumentation of the `openai` client (run as a subprocess by
test_trace_instrumentations.py: each instrumentation patches `openai` process-wide).

    python -m slm_pipeline_tests.instrumented_agent INSTRUMENTATION BASE_URL API_KEY [--otlp URL --spans FILE]

INSTRUMENTATION is openai-v2 (opentelemetry-instrumentation-openai-v2), openllmetry
(opentelemetry-instrumentation-openai), openinference (openinference-instrumentation-openai) or none. It makes
the calls of `CALLS` (plain, streaming, with tools, streaming with tools, a tool result) against BASE_URL; the
spans go to the gateway's /v1/traces through the real OTLP/HTTP exporter (protobuf, gzip, the agent's key), and
to FILE as OTLP/JSON lines (what the OpenTelemetry Collector's file exporter writes).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order by its id.",
                                           "parameters": {"type": "object", "properties": {
                                               "query": {"type": "string"}}, "required": ["query"]}}}]
SYSTEM = {"role": "system", "content": "You are the order-support agent."}
CALLS: list[dict[str, Any]] = [
    {"messages": [SYSTEM, {"role": "user", "content": "plain: hello"}]},
    {"messages": [SYSTEM, {"role": "user", "content": "stream: hello"}], "stream": True,
     "stream_options": {"include_usage": True}},
    {"messages": [SYSTEM, {"role": "user", "content": "tools: where is order 7?"}], "tools": TOOLS},
    {"messages": [SYSTEM, {"role": "user", "content": "stream tools: where is order 8?"}], "tools": TOOLS,
     "stream": True},
    {"messages": [SYSTEM, {"role": "user", "content": "tool result: order 9?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_9", "type": "function", "function": {"name": "lookup_order",
                                                                        "arguments": '{"query": "9"}'}}]},
                  {"role": "tool", "tool_call_id": "call_9", "content": "shipped"}], "tools": TOOLS},
]
CONTENT_ENV = {  # content capture on, as each instrumentation documents it
    "openai-v2": {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"},
    "openllmetry": {"TRACELOOP_TRACE_CONTENT": "true"},
    "openinference": {},
}


def _instrumentor(name: str) -> Any:
    if name == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    elif name == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    else:
        from openinference.instrumentation.openai import OpenAIInstrumentor
    return OpenAIInstrumentor()


def _file_exporter(path: str) -> Any:
    import orjson
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class OtlpJsonFile(SpanExporter):
        """OTLP/JSON lines, ids in hex as the OTLP/JSON encoding asks."""

        def export(self, spans: Any) -> SpanExportResult:
            document = MessageToDict(encode_spans(spans))
            for resource in document.get("resourceSpans", []):
                for scope in resource.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        for key in ("traceId", "spanId", "parentSpanId"):
                            if key in span:
                                import base64

                                span[key] = base64.b64decode(span[key]).hex()
            with open(path, "ab") as handle:
                handle.write(orjson.dumps(document) + b"\n")
            return SpanExportResult.SUCCESS

    return OtlpJsonFile()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("instrumentation", choices=["openai-v2", "openllmetry", "openinference", "none"])
    parser.add_argument("base_url")
    parser.add_argument("api_key")
    parser.add_argument("--otlp", help="the gateway's base URL (spans go to its /v1/traces)")
    parser.add_argument("--otlp-key", help="the key the spans are exported with")
    parser.add_argument("--spans", help="also write the spans here, as OTLP/JSON lines")
    args = parser.parse_args()
    provider = None
    if args.instrumentation != "none":
        os.environ.update(CONTENT_ENV[args.instrumentation])
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource({"service.name": f"{args.instrumentation}-service"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=f"{args.otlp}/v1/traces", headers={"authorization": f"Bearer {args.otlp_key}"},
            compression=Compression.Gzip)))
        if args.spans:
            provider.add_span_processor(SimpleSpanProcessor(_file_exporter(args.spans)))
        _instrumentor(args.instrumentation).instrument(tracer_provider=provider)
    import openai

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    for call in CALLS:
        answer = client.chat.completions.create(model="gpt-4o", **call)
        if call.get("stream"):
            for _ in answer:
                pass
    if provider is not None:
        provider.shutdown()  # flushes the batch to the gateway


if __name__ == "__main__":
    main()
