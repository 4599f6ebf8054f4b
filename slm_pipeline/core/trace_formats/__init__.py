"""S1 from where agents' traffic already lives: OpenTelemetry traces (OTLP, the GenAI semantic conventions,
OpenInference, OpenLLMetry), LiteLLM's `StandardLoggingPayload`, Langfuse's observations and the NVIDIA Data
Flywheel's log documents, each turned into this project's canonical call record (`core/records.py`).

    otlp.py          OTLP/HTTP ExportTraceServiceRequest from protobuf or JSON (gzip or not)
    spans.py         resource / scope / spans / events flattened into plain `Span` objects
    genai.py         OpenTelemetry GenAI conventions (attributes, events, input/output messages)
    openinference.py OpenInference (`llm.input_messages.N.message.*`, ...)
    langfuse.py      Langfuse observations (its API export, and its OpenTelemetry attributes)
    litellm.py       LiteLLM's StandardLoggingPayload
    dfw.py           NVIDIA Data Flywheel log documents
    calls.py         a span (or a log document) -> a canonical call record, or skipped with a reason
    files.py         file import: format detection and the records of one file
"""
