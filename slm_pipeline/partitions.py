"""Partitions: every asset of the pipeline is computed per agent (and, from S3 on, per task cluster)."""

import dagster as dg

agent_partitions = dg.DynamicPartitionsDefinition(name="agent")
"""One key per agent id; the `new_agent_calls` sensor adds a key when an agent first appears."""
