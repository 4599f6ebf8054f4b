"""S5 input: a task cluster's curated calls -> a chat fine-tuning dataset with fixed splits.

Each example is the request as the cluster's SLM sees it (`specialist_prompt`: by default
the compact form, a short *task prompt* with the tools it may call and the conversation
after the agent's system prompt; or the agent's request as sent), and the teacher's
answer as the target (sequence-level distillation). The SLM server renders requests
through the same `SpecialistPrompt` at serving time.

Splits are deterministic and stable as traffic grows: near-duplicate user turns form
one group, each group goes wholly to one split, and within each stratum (the tools
called, or the answer shape) groups are ordered by a hash of their first call id and
dealt out in the configured proportions; strata too small to split (fewer than 3 groups)
are pooled and dealt together, so a cluster of rarely repeated functions still has a test split.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from slm_pipeline.core.chat import latest_user_turn
from slm_pipeline.core.curate.filters import near_duplicates
from slm_pipeline.core.specialist_prompt import PromptForm, SpecialistPrompt, instruction_head, task_instruction
from slm_pipeline.core.specialist_prompt import conversation, tool_signature  # noqa: F401 - re-exported
from slm_pipeline.core.toolcalls import ParsedAnswer, render_answer, teacher_answer

DATASETS_TABLE = "task_datasets"
DATASET_SCHEMA = pl.Schema({
    "call_id": pl.String,
    "split": pl.String,  # train | validation | test
    "stratum": pl.String,  # the tools called in order, or the answer shape
    "group": pl.String,  # near-duplicate group (the first call's id)
    "answer_kind": pl.String,  # tool_call | json | text
    "messages": pl.String,  # JSON: [system task prompt, conversation...]
    "completion": pl.String,  # the teacher's answer in the SLM format (toolcalls.render_answer)
})
Split = Literal["train", "validation", "test"]


@dataclass(frozen=True)
class DatasetConfig:
    """How a cluster's dataset is built; defaults are the documented ones."""

    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    min_examples: int = 50  # below this the cluster stays on the LLM
    max_examples: int | None = None  # cap (newest calls kept); None: all
    near_duplicate_threshold: float = 0.8  # Jaccard on user-turn 3-shingles; one group per near-duplicate set
    # compact: a short task instruction, the tools as signatures, the conversation; full: the agent's request as
    # sent (its system prompt and tool schemas). The SLM server renders requests the same way (specialist_prompt).
    prompt_form: PromptForm = "compact"


@dataclass
class TaskDataset:
    agent_id: str
    cluster_id: str
    status: Literal["ready", "stays_on_llm"]
    reason: str
    task_prompt: str
    examples: pl.DataFrame  # DATASET_SCHEMA
    filtered: dict[str, int] = field(default_factory=dict)  # reason -> calls left out
    tools: list[dict[str, Any]] = field(default_factory=list)  # the OpenAI definitions of the tools it calls
    prompt_form: PromptForm = "compact"  # how examples (and, once promoted, served requests) are shown to the SLM
    prompt_tools: list[str] = field(default_factory=list)  # the tools the compact form lists (when offered)

    @property
    def specialist_prompt(self) -> SpecialistPrompt:
        return SpecialistPrompt(self.prompt_form, self.task_prompt, tuple(self.prompt_tools))

    def split(self, name: Split) -> pl.DataFrame:
        return self.examples.filter(pl.col("split") == name)

    def leaking_groups(self) -> int:
        """Near-duplicate groups found in more than one split (0 by construction)."""
        if self.examples.height == 0:
            return 0
        spans = self.examples.group_by("group").agg(pl.col("split").n_unique())
        return spans.filter(pl.col("split") > 1).height

    def summary(self) -> dict[str, Any]:
        counts = Counter(self.examples["split"].to_list()) if self.examples.height else Counter()
        return {
            "status": self.status, "reason": self.reason, "examples": self.examples.height,
            "train": counts.get("train", 0), "validation": counts.get("validation", 0), "test": counts.get("test", 0),
            "strata": self.examples["stratum"].n_unique() if self.examples.height else 0,
            "groups": self.examples["group"].n_unique() if self.examples.height else 0,
            "filtered": dict(self.filtered),
        }


def task_prompt(label: str, answer_kind: str, tools: list[dict[str, Any]]) -> str:
    """The short system prompt of a specialised SLM (the compact form's instruction)."""
    return task_instruction(label, answer_kind, tools)


def serving_messages(prompt: str, request: dict[str, Any], form: PromptForm = "compact") -> list[dict[str, str]]:
    """What the specialised SLM sees for a request (`SpecialistPrompt(form, prompt).messages`)."""
    return SpecialistPrompt(form, prompt).messages(request)


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def assign_splits(strata: list[str], groups: list[str], validation: float, test: float) -> list[Split]:
    """Deal near-duplicate groups to splits per stratum, in hash order, hitting the fractions as closely as
    whole groups allow.

    A stratum of fewer than 3 groups cannot be split on its own; such strata are pooled and the pool is dealt
    like one stratum. Without the pool, a cluster whose calls each use their own function (a tool suite, or
    public benchmarks where every question offers its own tool) would hold out nothing at all. Only a pool of
    fewer than 3 groups goes to train whole."""
    members: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, (stratum, group) in enumerate(zip(strata, groups)):
        members[stratum][group].append(index)
    dealt = [by_group for by_group in members.values() if len(by_group) >= 3]
    pooled: dict[str, list[int]] = defaultdict(list)  # the strata too small to split, as one
    for by_group in members.values():
        if len(by_group) < 3:
            for group, indices in by_group.items():
                pooled[group].extend(indices)
    splits: list[Split] = ["train"] * len(strata)
    for by_group in [*dealt, pooled]:
        ordered = sorted(by_group, key=lambda g: (_stable_hash(g), g))
        if len(ordered) < 3:
            continue
        total = sum(len(v) for v in by_group.values())
        want = {"test": test * total, "validation": validation * total}
        taken = {"test": 0, "validation": 0}
        for group in ordered:
            size = len(by_group[group])
            target: Split = "train"
            for name in ("test", "validation"):
                if taken[name] + size / 2 <= want[name]:
                    target = name  # type: ignore[assignment]
                    break
            if target != "train":
                taken[target] += size
            for index in by_group[group]:
                splits[index] = target
    return splits


def build_task_dataset(agent_id: str, cluster_id: str, label: str, calls: pl.DataFrame,
                       config: DatasetConfig = DatasetConfig()) -> TaskDataset:
    """The dataset of one cluster from its curated calls (a frame with call_id, seq, request, response)."""
    calls = calls.sort("seq")
    if config.max_examples is not None and calls.height > config.max_examples:
        calls = calls.tail(config.max_examples)
    filtered: Counter[str] = Counter()
    rows, answers, tools_by_name, kinds = [], [], {}, Counter()
    for row in calls.iter_rows(named=True):
        request, response = json.loads(row["request"]), json.loads(row["response"])
        answer: ParsedAnswer = teacher_answer(response)
        if answer.kind == "invalid":
            filtered["teacher_answer_unreadable"] += 1
            continue
        if not latest_user_turn(request).strip():
            filtered["no_user_turn"] += 1
            continue
        for tool in request.get("tools") or []:
            name = (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
            if name and name not in tools_by_name:
                tools_by_name[name] = tool
        kinds[answer.kind] += 1
        rows.append((row, request))
        answers.append(answer)
    kind = kinds.most_common(1)[0][0] if kinds else "text"
    called = sorted({c.name for a in answers for c in a.tool_calls})
    missing = [name for name in called if name not in tools_by_name]
    tools = [tools_by_name[name] for name in called if name in tools_by_name]
    prompt = instruction_head(label, kind)
    prompt_tools = tuple(called) if kind == "tool_call" else ()
    if missing:
        prompt += "\nAlso: " + ", ".join(f"{name}(...)" for name in missing)

    specialist = SpecialistPrompt(config.prompt_form, prompt, prompt_tools)
    user_turns = [latest_user_turn(request) for _, request in rows]
    duplicate_of = near_duplicates(user_turns, threshold=config.near_duplicate_threshold)
    group_of: list[str] = []
    for index, (row, _) in enumerate(rows):
        root = index
        while root in duplicate_of:
            root = duplicate_of[root]
        group_of.append(rows[root][0]["call_id"])
    strata = ["+".join(c.name for c in a.tool_calls) if a.kind == "tool_call" else a.kind for a in answers]
    splits = assign_splits(strata, group_of, config.validation_fraction, config.test_fraction)
    examples = pl.DataFrame([{
        "call_id": row["call_id"], "split": split, "stratum": stratum, "group": group, "answer_kind": answer.kind,
        "messages": json.dumps(specialist.messages(request), ensure_ascii=False),
        "completion": render_answer(answer),
    } for (row, request), answer, stratum, group, split in zip(rows, answers, strata, group_of, splits)],
        schema=DATASET_SCHEMA)
    status, reason = "ready", f"{examples.height} examples"
    if examples.height < config.min_examples:
        status = "stays_on_llm"
        reason = (f"only {examples.height} usable examples, fewer than min_examples={config.min_examples}; "
                  "the cluster stays on the LLM until more traffic arrives")
    elif examples.filter(pl.col("split") == "test").height == 0:
        status, reason = "stays_on_llm", "too few distinct requests to hold out a test split"
    return TaskDataset(agent_id, cluster_id, status, reason, prompt, examples, dict(filtered), tools,
                       config.prompt_form, list(prompt_tools))


def cluster_calls_frame(lake: Any, agent_id: str, cluster_id: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The curated calls of one cluster, and the cluster's row of `task_clusters`."""
    from slm_pipeline.core.cluster.pipeline import ASSIGNMENTS_TABLE, CLUSTERS_TABLE
    from slm_pipeline.core.curate.pipeline import CURATED_TABLE

    clusters = lake.read(CLUSTERS_TABLE, agent_id)
    if clusters is None or clusters.filter(pl.col("cluster_id") == cluster_id).height == 0:
        raise LookupError(f"task cluster {cluster_id!r} of agent {agent_id!r} is not in the latest task_clusters; "
                          "materialise task_clusters for the agent first (its old clusters may have been retired)")
    cluster = clusters.filter(pl.col("cluster_id") == cluster_id).row(0, named=True)
    assignments = lake.read(ASSIGNMENTS_TABLE, agent_id, columns=["call_id", "cluster_id"])
    curated = lake.read(CURATED_TABLE, agent_id, columns=["call_id", "seq", "request", "response"])
    members = assignments.filter(pl.col("cluster_id") == cluster_id).select("call_id")
    return curated.join(members, on="call_id", how="semi"), cluster


def build_cluster_dataset(lake: Any, agent_id: str, cluster_id: str, config: DatasetConfig = DatasetConfig()
                          ) -> TaskDataset:
    """Build one cluster's dataset from the lake and write it back (`task_datasets`, data + dataset.json)."""
    from slm_pipeline.core.lake import cluster_partition

    calls, cluster = cluster_calls_frame(lake, agent_id, cluster_id)
    dataset = build_task_dataset(agent_id, cluster_id, cluster["label"], calls, config)
    partition = cluster_partition(agent_id, cluster_id)
    lake.write(DATASETS_TABLE, partition, dataset.examples)
    meta = {**dataset.summary(), "agent_id": agent_id, "cluster_id": cluster_id, "label": cluster["label"],
            "task_prompt": dataset.task_prompt, "prompt_form": dataset.prompt_form,
            "prompt_tools": dataset.prompt_tools, "tools": dataset.tools,
            "calls": calls.height,
            "context_needed": int((cluster["prompt_tokens_p95"] or 0) + (cluster["answer_tokens_p95"] or 0))}
    lake.put_file(DATASETS_TABLE, partition, "dataset.json", json.dumps(meta, indent=2).encode())
    return dataset


def load_cluster_dataset(lake: Any, agent_id: str, cluster_id: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """A written dataset and its summary; LookupError (saying what to run) when there is none."""
    from slm_pipeline.core.lake import cluster_partition

    partition = cluster_partition(agent_id, cluster_id)
    meta = lake.get_file(DATASETS_TABLE, partition, "dataset.json")
    frame = lake.read(DATASETS_TABLE, partition)
    if meta is None or frame is None:
        raise LookupError(f"no task dataset for {agent_id}:{cluster_id}; materialise task_datasets first")
    return frame, json.loads(meta)
