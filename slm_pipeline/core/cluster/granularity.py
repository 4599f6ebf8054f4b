"""Cluster granularity that serves conversion: a task cluster is the largest group of calls one SLM can learn.

The embedding clustering finds function-level groups (one per tool called, or per kind of free-text
job). On a real multi-tool agent those groups are too small to train on: an SLM specialised to a tool
suite learns to choose among the suite's functions and fill their arguments, and gets far more
examples than one function gives. So the function-level groups are coarsened by the structure of the
calls, not by a fixed k:

0. A group that spans suites (similar wording, another suite's tools) splits by suite first.
1. Structure. A call's *suite* is its system prompt and the set of tools it was offered. A call the
   embedding clustering left out, whose suite offers tools, joins the nearest group of its own suite
   (nearest centroid); when its suite has no group yet, its suite's left-out calls form one.
2. Level 1, same suite. A group smaller than `min_size` (the dataset minimum) merges into the most
   similar group (centroid cosine) of the same suite, smallest first, until every group of the suite
   reaches the minimum or the suite is one group. Groups that already reach it stay apart, so an agent
   whose tasks are large keeps one cluster per task.
3. Level 2, same kind of job. Groups still too small pool, the same way, with other groups too small
   of the same system prompt and answer shape (tool call, JSON, text) whose tools differ: traffic where
   every call offers its own function (public function-calling benchmarks) pools into "call the function
   you are given" clusters of trainable size. A trainable cluster never takes in another suite's calls;
   at most one group per kind of job stays under the minimum.

A merge is allowed only between groups that are each at least `purity` pure on the level's key, so a
merged cluster never mixes suites (level 1) or system prompts and answer shapes (level 2). The
function-level groups stay visible as strata (the tools called, or the answer shape) inside each
cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Coarsening:
    labels: np.ndarray  # per call: final label (-1: unclustered)
    joined: np.ndarray  # per call: True when a left-out call joined a group of its suite
    merged_into: dict[int, int] = field(default_factory=dict)  # function-level label -> final label
    merges: list[tuple[int, int, str]] = field(default_factory=list)  # (absorbed, into, level)


def suite_key(system: str | None, offered: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
    """The tool suite of a call: its system prompt and the tools it was offered (None without tools)."""
    return (system or "", tuple(sorted(set(offered)))) if offered else None


def job_key(system: str | None, offered: Sequence[str], shape: str) -> tuple[str, bool, str]:
    """The kind of job: the system prompt, whether tools were offered, and the answer shape."""
    return (system or "", bool(offered), shape)


def stratum_of(called: Sequence[str], shape: str) -> str:
    """A call's stratum inside its cluster: the tools it called in order, or its answer shape."""
    return "+".join(called) if called else shape


def _majority(keys: list[Hashable], purity: float) -> Hashable | None:
    if not keys:
        return None
    key, count = Counter(keys).most_common(1)[0]
    return key if key is not None and count / len(keys) >= purity else None


def coarsen(vectors: np.ndarray, labels: np.ndarray, suites: list[Hashable | None], jobs: list[Hashable],
            min_size: int, purity: float = 0.9, recurring: int = 10) -> Coarsening:
    """Coarsen function-level `labels` (per call, -1 unclustered) of unit `vectors` to trainable clusters."""
    labels = labels.copy()
    joined = np.zeros(len(labels), dtype=bool)
    members: dict[int, list[int]] = {}
    for index, label in enumerate(labels.tolist()):
        if label >= 0:
            members.setdefault(label, []).append(index)
    result = Coarsening(labels, joined, {label: label for label in members})

    # 0. a group that spans tool suites (similar wording, other tools) splits by suite, for suites that recur
    # (at least `recurring` calls); calls of one-off suites stay with the group's largest part
    suite_calls = Counter(suites)
    next_label = max(members, default=-1) + 1
    for label, rows in list(members.items()):
        parts: dict[Hashable, list[int]] = {}
        for row in rows:
            key = suites[row] if suites[row] is not None and suite_calls[suites[row]] >= recurring else None
            parts.setdefault(key, []).append(row)
        if len(parts) < 2:
            continue
        largest, *others = sorted(parts.values(), key=len, reverse=True)
        members[label] = largest
        for part in others:
            members[next_label] = part
            labels[part] = next_label
            next_label += 1

    def centroid(rows: list[int]) -> np.ndarray:
        centre = vectors[rows].mean(axis=0)
        return centre / max(float(np.linalg.norm(centre)), 1e-9)

    centroids = {label: centroid(rows) for label, rows in members.items()}

    # 1. left-out calls of a tool suite join their suite's nearest group, or form their suite's first group
    suite_of_group = {label: _majority([suites[i] for i in rows], purity) for label, rows in members.items()}
    left_out: dict[Hashable, list[int]] = {}
    for index in np.where(labels < 0)[0].tolist():
        if suites[index] is not None:
            left_out.setdefault(suites[index], []).append(index)
    for suite, rows in left_out.items():
        groups = [label for label, key in suite_of_group.items() if key == suite]
        if groups:
            similarity = vectors[rows] @ np.stack([centroids[g] for g in groups]).T
            for row, best in zip(rows, similarity.argmax(axis=1).tolist()):
                labels[row] = groups[best]
                members[groups[best]].append(row)
        else:
            labels[rows] = next_label
            members[next_label] = list(rows)
            suite_of_group[next_label] = suite
            next_label += 1
        joined[rows] = True
    centroids = {label: centroid(rows) for label, rows in members.items()}

    # 2 and 3. smallest first, a group under the minimum merges into the most similar group with its key
    for level, key_of in (("suite", suites), ("job", jobs)):
        keys = {label: _majority([key_of[i] for i in rows], purity) for label, rows in members.items()}
        while True:
            by_key: dict[Hashable, list[int]] = {}
            for label, key in keys.items():
                if key is not None:
                    by_key.setdefault(key, []).append(label)
            if level == "job":  # across suites, small groups pool with small groups only: a trainable
                by_key = {key: [g for g in groups if len(members[g]) < min_size]  # cluster is never diluted
                          for key, groups in by_key.items()}
            small = [label for label, key in keys.items()
                     if key is not None and len(members[label]) < min_size and len(by_key[key]) > 1]
            if not small:
                break
            absorbed = min(small, key=lambda label: (len(members[label]), label))
            partners = [label for label in by_key[keys[absorbed]] if label != absorbed]
            similarity = np.stack([centroids[p] for p in partners]) @ centroids[absorbed]
            into = partners[int(similarity.argmax())]
            if len(members[absorbed]) > len(members[into]):  # the larger group's label lives on
                absorbed, into = into, absorbed
            members[into].extend(members.pop(absorbed))
            labels[members[into]] = into
            centroids[into] = centroid(members[into])
            del centroids[absorbed], keys[absorbed]
            result.merges.append((absorbed, into, level))
            for original, final in result.merged_into.items():
                if final == absorbed:
                    result.merged_into[original] = into
    result.labels = labels
    return result


def size_figures(sizes: Sequence[int], calls: int, unclustered: int, min_size: int) -> dict[str, float | int | None]:
    """The figures every clustering reports: clusters, noise share, the share of calls in clusters that reach
    the dataset minimum (trainable), and the size distribution."""
    trainable = [s for s in sizes if s >= min_size]
    ordered = sorted(sizes)
    return {
        "clusters": len(sizes),
        "trainable_clusters": len(trainable),
        "trainable_share": sum(trainable) / calls if calls else 0.0,
        "calls_in_trainable_clusters": sum(trainable),
        "noise_fraction": unclustered / calls if calls else 0.0,
        "dataset_minimum": min_size,
        "cluster_size_min": ordered[0] if ordered else None,
        "cluster_size_p50": float(np.median(ordered)) if ordered else None,
        "cluster_size_max": ordered[-1] if ordered else None,
    }
