"""Bundled demo traffic: three agents with recurring tasks and production-log realities."""

from slm_pipeline.core.demo.traffic import DemoSummary, Realities, default_labels_path, demo_agents, generate, \
    write_demo_traffic

__all__ = ["DemoSummary", "Realities", "default_labels_path", "demo_agents", "generate", "write_demo_traffic"]
