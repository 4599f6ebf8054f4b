"""How a call is represented for clustering: what it was asked and what it did.

A call's vector is the weighted concatenation of
* the embedding of its latest user turn, with values masked (digits, and the surrogates curation
  wrote) so that "Where is ORD-123456?" and "Where is ORD-654321?" are the same request;
* a one-hot fingerprint of its system prompt;
* the tools it was offered and the tools the teacher called (multi-hot);
* the shape of the answer: tool call, JSON or free text.
Each part is unit length before weighting, so the weights say how much each part counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SHAPES = ("tool_call", "json", "text")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class FeatureWeights:
    """How much each part of a call counts (the embedding of the user turn has unit weight by default)."""

    user_turn: float = 1.0
    system_prompt: float = 1.5
    tools_offered: float = 0.5
    tools_called: float = 3.0
    answer_shape: float = 1.5


def mask_text(text: str, replacements: Iterable[str] = ()) -> str:
    """The request without its values: curation's surrogates become `<value>`, digits become 0."""
    for value in sorted((r for r in replacements if r), key=len, reverse=True):
        text = text.replace(value, "<value>")
    return _SPACES.sub(" ", _DIGITS.sub("0", text)).strip()


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


@dataclass
class FeatureSpace:
    """The categorical vocabularies and weights of one fitted clustering (saved with the assigner)."""

    weights: FeatureWeights = field(default_factory=FeatureWeights)
    systems: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    # Fingerprints of the scrubbed system prompts -> those of the originals. The gateway routes raw
    # requests; evaluation replays curated (scrubbed) ones; both must land on the same prompt.
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fit(cls, systems: Iterable[str | None], offered: Iterable[Sequence[str]], called: Iterable[Sequence[str]],
            weights: FeatureWeights = FeatureWeights()) -> FeatureSpace:
        tools = sorted({t for group in (*offered, *called) for t in group})
        return cls(weights, sorted({s for s in systems if s}), tools)

    def categorical(self, systems: Sequence[str | None], offered: Sequence[Sequence[str]],
                    called: Sequence[Sequence[str]], shapes: Sequence[str]) -> np.ndarray:
        n = len(systems)
        system_index = {s: i for i, s in enumerate(self.systems)}
        tool_index = {t: i for i, t in enumerate(self.tools)}
        sys_part = np.zeros((n, len(self.systems) + 1), dtype=np.float32)  # last column: unseen prompt
        offered_part = np.zeros((n, len(self.tools) + 1), dtype=np.float32)  # last column: no tools
        called_part = np.zeros((n, len(self.tools) + 1), dtype=np.float32)  # last column: no tool called
        shape_part = np.zeros((n, len(SHAPES)), dtype=np.float32)
        for row in range(n):
            system = self.aliases.get(systems[row] or "", systems[row])
            sys_part[row, system_index.get(system, len(self.systems))] = 1
            for part, names in ((offered_part, offered[row]), (called_part, called[row])):
                known = [tool_index[t] for t in names if t in tool_index]
                part[row, known or [len(self.tools)]] = 1
            shape_part[row, SHAPES.index(shapes[row]) if shapes[row] in SHAPES else SHAPES.index("text")] = 1
        w = self.weights
        return np.hstack([w.system_prompt * _unit(sys_part), w.tools_offered * _unit(offered_part),
                          w.tools_called * _unit(called_part), w.answer_shape * shape_part])

    def combine(self, text_vectors: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Unit-length call vectors (cosine similarity is a dot product)."""
        return _unit(np.hstack([self.weights.user_turn * _unit(text_vectors), categorical]).astype(np.float32))

    def to_dict(self) -> dict[str, Any]:
        return {"weights": asdict(self.weights), "systems": self.systems, "tools": self.tools, "aliases": self.aliases}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpace:
        return cls(FeatureWeights(**data["weights"]), list(data["systems"]), list(data["tools"]),
                   dict(data.get("aliases", {})))
