"""Stable cluster ids: a new clustering inherits ids from the previous one through the calls they share.

A new cluster continues an old one when most of its previously seen calls were in that cluster.
When two new clusters come from one old cluster, the larger overlap keeps the id (a split); when a
new cluster takes most of two or more old clusters, it keeps the id of the largest (a merge).
Clusters without history are born with fresh ids; ids are never reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IdentityResult:
    ids: dict[int, str]  # new cluster label -> stable cluster id
    events: list[dict[str, Any]] = field(default_factory=list)


def _number(cluster_id: str) -> int:
    match = re.fullmatch(r"c(\d+)", cluster_id)
    return int(match.group(1)) if match else 0


def match_clusters(new: dict[int, set[str]], previous: dict[str, set[str]], known_ids: set[str] = frozenset(),
                   continue_share: float = 0.5, merge_share: float = 0.5) -> IdentityResult:
    """Map new cluster labels to ids, given the member call ids of the new and the previous clusters."""
    next_number = max((_number(i) for i in set(previous) | set(known_ids)), default=0) + 1
    seen_before = set().union(*previous.values()) if previous else set()
    result = IdentityResult({})

    successors: dict[str, list[tuple[int, int]]] = {}
    for label, members in new.items():
        overlaps = {old: len(members & calls) for old, calls in previous.items()}
        seen = len(members & seen_before)
        if seen:
            best, overlap = max(overlaps.items(), key=lambda item: (item[1], item[0]))
            if overlap / seen >= continue_share:
                successors.setdefault(best, []).append((overlap, label))

    def fresh() -> str:
        nonlocal next_number
        cluster_id = f"c{next_number:03d}"
        next_number += 1
        return cluster_id

    for old, heirs in sorted(successors.items()):
        heirs.sort(reverse=True)
        result.ids[heirs[0][1]] = old
        result.events.append({"event": "continued", "cluster_id": old, "related": None, "calls": heirs[0][0]})
        for overlap, label in heirs[1:]:
            result.ids[label] = fresh()
            result.events.append({"event": "split", "cluster_id": result.ids[label], "related": old, "calls": overlap})
    for label in sorted(new, key=lambda k: (-len(new[k]), k)):  # the largest newborn gets the lowest id
        if label not in result.ids:
            result.ids[label] = fresh()
            result.events.append({"event": "birth", "cluster_id": result.ids[label], "related": None,
                                  "calls": len(new[label])})

    absorbed: set[str] = set()
    for label, members in new.items():
        taken = [old for old, calls in previous.items() if calls and len(members & calls) >= merge_share * len(calls)]
        for old in taken:
            if old != result.ids[label]:
                absorbed.add(old)
                result.events.append({"event": "merge", "cluster_id": result.ids[label], "related": old,
                                      "calls": len(members & previous[old])})
    continued = set(result.ids.values())
    for old in sorted(set(previous) - continued - absorbed):
        result.events.append({"event": "retired", "cluster_id": old, "related": None, "calls": 0})
    return result
