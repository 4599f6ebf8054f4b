"""The SLM server: the base SLM with every promoted LoRA adapter behind an OpenAI-compatible API.

Dagster-free like `slm_pipeline.core`; `slm-pipeline serve` runs it. The routing table names the
adapters: each task cluster's promoted champion, by its `serving_model` name, and the challengers
the gateway asks in the shadow. The server fetches them from the MLflow registry, renders each
request through the adapter's task prompt as in training, and parses tool calls out of the
generated text.
"""
