"""Partitions: every asset of the pipeline is computed per agent (and, from S3 on, per task cluster)."""

import dagster as dg

agent_partitions = dg.DynamicPartitionsDefinition(name="agent")
"""One key per agent id; the `new_agent_calls` sensor adds a key when an agent first appears."""

task_cluster_partitions = dg.DynamicPartitionsDefinition(name="task_cluster")
"""One key per task cluster, `<agent id>:<cluster id>` (agent ids have no colon); `task_clusters` adds them."""


def task_cluster_key(agent_id: str, cluster_id: str) -> str:
    return f"{agent_id}:{cluster_id}"


def split_task_cluster_key(key: str) -> tuple[str, str]:
    agent_id, _, cluster_id = key.rpartition(":")
    return agent_id, cluster_id
