"""The Dagster-free core of the pipeline: plain functions and classes, usable on their own."""
