"""Dagster assets, one module per step of the LLM-to-SLM conversion."""
