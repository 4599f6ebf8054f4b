"""The S1 gateway: an OpenAI-compatible proxy that logs every agent call, encrypted, without blocking.

Dagster-free like `slm_pipeline.core`; `slm-pipeline gateway` runs it.
"""
