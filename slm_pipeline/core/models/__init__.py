"""SLMs: the catalogue S4 picks from, and loading weights offline (the embedded SmolLM2 included)."""
