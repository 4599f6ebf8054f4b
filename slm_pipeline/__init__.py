"""slm_pipeline: turn the LLM traffic of AI agents into small, specialised language models."""

__version__ = "0.1.0"
